"""`sudo` inside the sandbox, without setuid: the agent runs the command for whoever asks on its socket.

E2B's templates give their user `user` passwordless sudo, and code written against them (often by a model)
runs `sudo apt-get install ...`. Here every sandbox process has no_new_privs (docs/threat-model.md), so a
setuid `sudo` cannot work. Instead the runtime binds `sudo_cli.py` at /usr/local/bin/sudo; it hands this
socket its stdin, stdout and stderr (SCM_RIGHTS) with the command, and the agent, root in the sandbox, runs
the command as the user asked for on those very descriptors, then answers its exit status. Signals the
client receives are forwarded; a client that goes away takes its command with it.

What this grants is what passwordless sudo grants in E2B's templates: root of the sandbox to any process in
it. Root of the sandbox is what API callers get anyway (`user: root`), and it is no one on the host.
"""
from __future__ import annotations

import array
import asyncio
import contextlib
import json
import os
import signal
import socket
import struct

from .users import lookup

SOCKET = "/run/sandboxd/sudo.sock"  # sudo_cli.py names it too
MAX_REQUEST = 256 * 1024
SECURE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KEPT = ("TERM", "LANG", "LC_ALL", "LANGUAGE", "COLORTERM", "DISPLAY")  # sudo's env_reset keeps these


async def serve(path: str = SOCKET) -> asyncio.Task | None:
    """Listen for sudo requests; None where the socket cannot be made (read-only root, no /run). A plain
    listening socket, not asyncio's server: its transport would read the first message itself, and the
    descriptors riding on it would be lost."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        listener.bind(path)
        os.chmod(path, 0o666)
        listener.listen(16)
        listener.setblocking(False)
    except OSError:
        listener.close()
        return None
    return asyncio.ensure_future(_accept(listener))


_sessions: set[asyncio.Task] = set()


async def _accept(listener: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    try:
        while True:
            conn, _ = await loop.sock_accept(listener)
            task = asyncio.ensure_future(_session(conn))
            _sessions.add(task)
            task.add_done_callback(_sessions.discard)
    finally:
        listener.close()


def environment(request: dict, user, caller_uid: int) -> dict[str, str]:
    """sudo's env_reset: a few of the caller's variables, then the target user's identity; `-E` keeps the
    caller's whole environment (PATH stays the secure one, as sudo's secure_path does). The caller is whom
    the kernel says is on the other end of the socket (SO_PEERCRED), not what the request claims."""
    given = request.get("env") or {}
    env = dict(given) if request.get("preserve_env") else {k: given[k] for k in KEPT if k in given}
    env.update({"PATH": SECURE_PATH, "HOME": user.home, "USER": user.name, "LOGNAME": user.name,
                "SHELL": "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"})
    caller = lookup(caller_uid)
    if caller is not None:
        env.update({"SUDO_USER": caller.name, "SUDO_UID": str(caller.uid), "SUDO_GID": str(caller.gid)})
    env["SUDO_COMMAND"] = " ".join(request.get("argv") or [])
    return env


async def _session(conn: socket.socket) -> None:
    conn.setblocking(False)
    fds: list[int] = []
    try:
        try:
            request, fds = await _receive(conn)
        except (OSError, ValueError, asyncio.TimeoutError):
            conn.close()
            return
        reader, writer = await asyncio.open_unix_connection(sock=conn)
        _pid, caller_uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                     struct.calcsize("3i")))
        try:
            proc = await _start(request, fds, caller_uid)
        except (OSError, ValueError, KeyError, TypeError) as e:
            await _answer(writer, {"error": str(e) or type(e).__name__, "exit": 1})
            return
    finally:
        for fd in fds:
            os.close(fd)
    waiting = asyncio.ensure_future(proc.wait())
    try:
        while not waiting.done():
            line = asyncio.ensure_future(reader.readline())
            await asyncio.wait({waiting, line}, return_when=asyncio.FIRST_COMPLETED)
            if line.done():
                data = line.result()
                if not data:  # the client is gone: so is its command
                    _signal(proc, signal.SIGKILL)
                    break
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    _signal(proc, int(json.loads(data)["signal"]))
            else:
                line.cancel()
        code = await waiting
        await _answer(writer, {"exit": code if code >= 0 else 128 - code})
    finally:
        if proc.returncode is None:
            _signal(proc, signal.SIGKILL)


async def _receive(sock: socket.socket) -> tuple[dict, list[int]]:
    """The request and its three descriptors, in one message (the client sends them together)."""
    loop = asyncio.get_running_loop()
    fds = array.array("i")
    while True:
        try:
            data, ancdata, _flags, _addr = sock.recvmsg(MAX_REQUEST, socket.CMSG_LEN(3 * fds.itemsize))
            break
        except BlockingIOError:
            ready = loop.create_future()
            loop.add_reader(sock.fileno(), ready.set_result, None)
            try:
                await asyncio.wait_for(ready, 10)
            finally:
                loop.remove_reader(sock.fileno())
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    received = list(fds)
    try:
        if len(received) != 3:
            raise ValueError("sudo: the request must carry stdin, stdout and stderr")
        while not data.endswith(b"\n"):  # the rest of a request longer than one read
            more = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
            if not more or len(data) + len(more) > MAX_REQUEST:
                raise ValueError("sudo: incomplete or oversized request")
            data += more
        return json.loads(data), received
    except BaseException:
        for fd in received:
            os.close(fd)
        raise


async def _start(request: dict, fds: list[int], caller_uid: int) -> asyncio.subprocess.Process:
    argv = request["argv"]
    if not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("sudo: no command")
    user = lookup(str(request.get("user") or "root"))
    if user is None:
        raise ValueError(f"sudo: unknown user {request.get('user')}")
    cwd = request.get("cwd") if isinstance(request.get("cwd"), str) and os.path.isdir(request["cwd"]) else user.home
    return await asyncio.create_subprocess_exec(
        *argv, stdin=fds[0], stdout=fds[1], stderr=fds[2], cwd=cwd, env=environment(request, user, caller_uid),
        user=user.uid, group=user.gid, extra_groups=[], start_new_session=True)


def _signal(proc: asyncio.subprocess.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def _answer(writer: asyncio.StreamWriter, answer: dict) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        writer.write(json.dumps(answer).encode() + b"\n")
        await writer.drain()
        writer.close()
