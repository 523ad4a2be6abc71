"""An interactive shell on a real PTY (used by the /terminal WebSocket, reusable by envd's PTY API)."""
from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import struct
import termios

from .processes import user_ids


class PtyProcess:
    def __init__(self, proc: asyncio.subprocess.Process, master: int):
        self.proc, self.master = proc, master
        self.output: asyncio.Queue[bytes | None] = asyncio.Queue()
        asyncio.get_running_loop().add_reader(master, self._on_readable)

    @classmethod
    async def start(cls, argv: list[str] | None, *, env: dict[str, str], cwd: str | None, cols: int = 80,
                    rows: int = 24, user: str | None = None) -> "PtyProcess":
        if argv is None:
            import shutil

            shell = shutil.which("bash", path=env.get("PATH")) or "/bin/sh"
            argv = [shell, "-i"] if shell.endswith("bash") else [shell]
        master, slave = os.openpty()
        _winsize(master, cols, rows)
        env = {**env, "TERM": env.get("TERM", "xterm-256color")}
        uid: int | None = None  # Popen's defaults: the agent's own user
        gid: int | None = None
        extra_groups: list[int] | None = None
        ids = user_ids(user)
        if ids:
            uid, gid, env["HOME"] = ids
            extra_groups = []
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                cwd=cwd if cwd and os.path.isdir(cwd) else None, start_new_session=True,
                preexec_fn=_take_ctty, user=uid, group=gid, extra_groups=extra_groups)
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        return cls(proc, master)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: every slave end closed, the shell is gone
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
            self.output.put_nowait(None)
            return
        self.output.put_nowait(data)

    async def read(self) -> bytes | None:
        return await self.output.get()

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master, view)
            except BlockingIOError:
                import select

                select.select([], [self.master], [], 1)
                continue
            view = view[n:]

    def resize(self, cols: int, rows: int) -> None:
        _winsize(self.master, cols, rows)
        try:
            os.killpg(self.proc.pid, signal.SIGWINCH)
        except ProcessLookupError:
            pass

    async def wait(self) -> int:
        code = await self.proc.wait()
        return 128 - code if code < 0 else code

    async def close(self) -> None:
        for sig in (signal.SIGHUP, signal.SIGKILL):
            if self.proc.returncode is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                await asyncio.wait_for(self.proc.wait(), 1)
            except asyncio.TimeoutError:
                pass
        try:
            asyncio.get_running_loop().remove_reader(self.master)
        except Exception:
            pass
        try:
            os.close(self.master)
        except OSError:
            pass


def _take_ctty() -> None:
    # After setsid (start_new_session), make the pty slave (fd 0) our controlling terminal: job control works.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", max(1, int(rows)), max(1, int(cols)), 0, 0))
