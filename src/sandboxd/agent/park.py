"""The agent's part in a memory checkpoint (docs/snapshots.md): let go of the host's socket, and take a new one.

The host's channel (fd 3, and every connection accepted on it) lives in the host's network namespace, which
CRIU cannot take with the sandbox. So before a checkpoint the host asks (`POST /checkpoint/park`) and the agent
closes that listening socket and those connections, and listens instead on an abstract unix socket in the
sandbox's own network namespace: the doorbell. After the restore (or when the checkpoint did not happen) the
host rings it from outside the sandbox and hands over a new listening socket with SCM_RIGHTS; the agent
serves on it as fd 3 again. An agent its sandbox's init started (no zygote) is given its first socket the same
way (SANDBOXD_AGENT_FD=doorbell): inherited, the init would hold it too, and CRIU could not take the sandbox.

Only the host may ring: the agent checks the caller's SO_PEERCRED pid, which the kernel reports as 0 for a
process outside the sandbox's PID namespace; every process of the sandbox has a pid in it.
"""
from __future__ import annotations

import asyncio
import os
import socket
import struct
from typing import Awaitable, Callable

DOORBELL = b"\0sandboxd-agent-doorbell"
FD = 3


class Channel:
    """The listening socket the host talks to the agent through, and the connections accepted on it."""

    def __init__(self, on_conn: Callable[..., Awaitable[None]], fd: int | None = FD):
        self.on_conn = on_conn
        # The number a handed socket takes: the inherited one's (3), or, for an agent that inherited none and
        # whose fd 3 is something else of its own, whatever it arrives as.
        self.fd = fd
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.doorbell: socket.socket | None = None
        self._ringing: asyncio.Task | None = None

    async def _serve_conn(self, reader, writer) -> None:
        self.writers.add(writer)
        try:
            await self.on_conn(reader, writer)
        finally:
            self.writers.discard(writer)

    async def listen(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        if sock.family == socket.AF_UNIX:
            self.server = await asyncio.start_unix_server(self._serve_conn, sock=sock)
        else:
            self.server = await asyncio.start_server(self._serve_conn, sock=sock)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()

    def park(self) -> None:
        """Called once the answer to the park request is on its way: close the host's socket and connections
        (on the next loop turns, so that answer is written first) and wait at the doorbell."""
        self.await_host()
        asyncio.get_running_loop().call_later(0.05, self.close)

    def await_host(self) -> None:
        """Listen at the doorbell until the host hands over a listening socket."""
        if self.doorbell is None:
            bell = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            bell.bind(DOORBELL)
            bell.listen(8)
            bell.setblocking(False)
            self.doorbell = bell
        if self._ringing is None or self._ringing.done():
            self._ringing = asyncio.ensure_future(self._wait_for_host())

    async def _wait_for_host(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.doorbell is not None
        while True:
            conn, _ = await loop.sock_accept(self.doorbell)
            try:
                pid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
                if pid != 0:  # a process of the sandbox
                    continue
                conn.settimeout(5)
                _, fds, _, _ = await loop.run_in_executor(None, socket.recv_fds, conn, 16, 1)
            except (OSError, struct.error):
                continue
            finally:
                conn.close()
            if len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                continue
            self.close()
            fd = fds[0]
            if self.fd is not None:
                os.dup2(fd, self.fd, inheritable=False)
                os.close(fd)
                fd = self.fd
            else:
                os.set_inheritable(fd, False)  # SCM_RIGHTS gives it inheritable: no command may get it
            await self.listen(socket.socket(fileno=fd))
            self.doorbell.close()
            self.doorbell = None
            return
