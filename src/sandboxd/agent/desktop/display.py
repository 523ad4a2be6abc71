"""The X display of a sandbox: started on the first desktop call, never before.

One Xvnc process is both the virtual framebuffer X server and the password-protected VNC server
(listening on a private unix socket that the agent tunnels over WebSocket, plus 127.0.0.1:5900+N when
the sandbox has a usable loopback). Openbox manages the windows so EWMH tools (wmctrl) work.
"""
from __future__ import annotations

import asyncio
import os
import re
import secrets
import socket
import string
import time
from pathlib import Path

from . import deps, proc
from .errors import DesktopInvalid, DesktopNotAvailable, DesktopToolFailed

DEFAULT_SIZE = (1280, 800)
MIN_SIDE, MAX_SIDE = 64, 8192


def _loopback_usable() -> bool:
    # An empty network namespace has its loopback down; then VNC is reachable only via the tunnel.
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
        return True
    except OSError:
        return False


class Display:
    def __init__(self, number: int | None = None, state_dir: str | Path | None = None):
        self.number = number if number is not None else int(os.environ.get("SANDBOXD_DESKTOP_DISPLAY", "1"))
        base = state_dir or os.environ.get("SANDBOXD_DESKTOP_DIR") or "/tmp/.sandboxd-desktop"
        self.dir = Path(base) / f"display-{self.number}"
        self.name = f":{self.number}"
        self.vnc_socket = self.dir / "vnc.sock"
        self.vnc_enabled = False
        self.vnc_password: str | None = None
        self.vnc_port: int | None = None
        self._x: asyncio.subprocess.Process | None = None
        self._wm: asyncio.subprocess.Process | None = None
        self._wm_ready = False
        self._lock = asyncio.Lock()
        self.started_at: float | None = None

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DISPLAY"] = self.name
        env.setdefault("HOME", "/root")
        return env

    @property
    def running(self) -> bool:
        return self._x is not None and self._x.returncode is None

    def processes(self) -> list[dict]:
        out = []
        for name, p in (("Xvnc", self._x), ("openbox", self._wm)):
            if p is not None:
                out.append({"name": name, "pid": p.pid, "running": p.returncode is None,
                            "exit_code": p.returncode})
        return out

    async def ensure(self) -> None:
        """Start the X server and window manager if they are not running (idempotent, serialised)."""
        missing = deps.missing(deps.CORE)
        if missing:
            raise DesktopNotAvailable(missing)
        # The window manager counts once it is ready, not once spawned: a request arriving while
        # another one starts it waits on the lock instead of using a half-started desktop.
        if self.running and self._wm is not None and self._wm.returncode is None and self._wm_ready:
            return
        async with self._lock:
            if not self.running:
                await self._start_x()
            if self._wm is None or self._wm.returncode is not None or not self._wm_ready:
                await self._start_wm()

    async def _start_x(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        if self.vnc_password is None:
            self.vnc_password = _random_password()
        await self._write_password(self.vnc_password)
        self.vnc_socket.unlink(missing_ok=True)
        self.vnc_port = 5900 + self.number if _loopback_usable() else None
        argv = ["Xvnc", self.name, "-geometry", "%dx%d" % DEFAULT_SIZE, "-depth", "24",
                "-rfbauth", str(self.dir / "passwd"), "-SecurityTypes", "VncAuth",
                "-rfbunixpath", str(self.vnc_socket), "-rfbunixmode", "0600", "-nolisten", "tcp",
                "-AlwaysShared", "-desktop", "sandboxd"]
        argv += ["-rfbport", str(self.vnc_port), "-interface", "127.0.0.1"] if self.vnc_port else ["-rfbport", "-1"]
        if os.environ.get("SANDBOXD_DESKTOP_GLX", "") not in ("1", "true", "yes"):
            # GLX loads Mesa's software renderer and LLVM: ~50 MiB per display for something Chromium
            # (--disable-gpu) and ordinary X apps do not need.
            argv += ["-extension", "GLX"]
        self._x = await proc.spawn(argv, self.env, str(self.dir / "Xvnc.log"))
        x_socket = f"/tmp/.X11-unix/X{self.number}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._x.returncode is not None:
                break
            if _connectable(x_socket) and self.vnc_socket.exists():
                self.started_at = time.time()
                # Commands the agent runs later inherit the display (the desktop template also sets it).
                os.environ.setdefault("DISPLAY", self.name)
                proc.log(f"Xvnc {self.name} started (pid {self._x.pid})")
                return
            await asyncio.sleep(0.02)
        tail = _tail(self.dir / "Xvnc.log")
        await proc.terminate(self._x)
        self._x = None
        raise DesktopToolFailed(f"the X server did not start on {self.name}: {tail}")

    async def _start_wm(self) -> None:
        self._wm_ready = False
        if self._wm is not None and self._wm.returncode is None:  # spawned before, not ready in time
            await proc.terminate(self._wm)
        self._wm = await proc.spawn(["openbox", "--sm-disable"], self.env, str(self.dir / "openbox.log"))
        # Ready once wmctrl answers: openbox announces itself (_NET_SUPPORTING_WM_CHECK) before it
        # publishes its client list (_NET_CLIENT_LIST), and until then `wmctrl -l` fails. Waiting for
        # the announcement alone let the first window listing after a start fail.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._wm.returncode is None:
            code, out, _ = await proc.run(["xprop", "-root", "_NET_SUPPORTING_WM_CHECK"], self.env, check=False)
            if code == 0 and b"window id" in out and (await proc.run(["wmctrl", "-l"], self.env, check=False))[0] == 0:
                proc.log(f"openbox started (pid {self._wm.pid})")
                self._wm_ready = True
                return
            await asyncio.sleep(0.05)
        raise DesktopToolFailed("the window manager did not start: " + _tail(self.dir / "openbox.log"))

    async def _write_password(self, password: str) -> None:
        _, out, _ = await proc.run(["vncpasswd", "-f"], self.env, data=(password + "\n").encode())
        path = self.dir / "passwd"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(out)

    async def set_vnc(self, enabled: bool, password: str | None = None) -> None:
        """Xvnc reads the password file at every authentication, so changing it needs no restart."""
        await self.ensure()
        if password is not None:
            if not password:
                raise DesktopInvalid("password must not be empty")
            self.vnc_password = password[:8]  # VNC authentication only uses the first 8 characters
        elif not enabled:
            self.vnc_password = _random_password()  # stopping VNC also locks out anyone who knew it
        assert self.vnc_password is not None  # set when ensure() started the X server
        await self._write_password(self.vnc_password)
        self.vnc_enabled = enabled

    # -- screen size (xrandr on Xvnc accepts new modes at run time) -------------------------------

    async def xrandr(self) -> tuple[str, tuple[int, int], list[tuple[int, int]]]:
        await self.ensure()
        _, out, _ = await proc.run(["xrandr", "-q"], self.env)
        text = out.decode()
        cur = re.search(r"current (\d+) x (\d+)", text)
        output = re.search(r"^(\S+) connected", text, re.M)
        modes = [(int(w), int(h)) for w, h in re.findall(r"^\s+(\d+)x(\d+)\s", text, re.M)]
        if not cur or not output:
            raise DesktopToolFailed("cannot read the screen configuration from xrandr")
        return output.group(1), (int(cur.group(1)), int(cur.group(2))), sorted(set(modes), reverse=True)

    async def size(self) -> tuple[int, int]:
        return (await self.xrandr())[1]

    async def set_size(self, width: int, height: int) -> tuple[int, int]:
        if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
            raise DesktopInvalid(f"resolution must be within {MIN_SIDE}..{MAX_SIDE} pixels per side")
        output, cur, modes = await self.xrandr()
        if cur == (width, height):
            return cur
        name = f"{width}x{height}"
        if (width, height) not in modes:
            name = f"sbx_{width}x{height}"
            clock = "%.2f" % (width * height * 60 / 1e6)
            await proc.run(["xrandr", "--newmode", name, clock, str(width), str(width + 8), str(width + 16),
                            str(width + 24), str(height), str(height + 1), str(height + 2), str(height + 3)],
                           self.env, check=False)  # fails harmlessly when the mode already exists
            await proc.run(["xrandr", "--addmode", output, name], self.env)
        await proc.run(["xrandr", "--output", output, "--mode", name], self.env)
        return await self.size()

    async def stop(self) -> None:
        await proc.terminate(self._wm)
        await proc.terminate(self._x)
        self._wm = self._x = None
        self._wm_ready = False
        self.vnc_enabled = False


def _random_password() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(8))


def _connectable(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
        return True
    except OSError:
        return False


def _tail(path: Path, n: int = 600) -> str:
    try:
        return path.read_text(errors="replace")[-n:].strip()
    except OSError:
        return ""
