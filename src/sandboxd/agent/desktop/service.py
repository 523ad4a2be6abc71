"""DesktopService: every desktop operation, knowing nothing about HTTP. One instance per agent."""
from __future__ import annotations

import asyncio
import time

from . import capture, deps, proc
from .display import Display
from .errors import DesktopNotAvailable, DesktopNotFound
from .x11 import X11, window_id

COMMON_RESOLUTIONS = [(3840, 2160), (2560, 1440), (1920, 1200), (1920, 1080), (1680, 1050), (1600, 900),
                      (1440, 900), (1366, 768), (1280, 1024), (1280, 800), (1280, 720), (1024, 768), (800, 600)]


class DesktopService:
    def __init__(self, display: Display | None = None):
        self.display = display or Display()
        self.x11 = X11(self.display)
        self.recorder = capture.Recorder(self.display)
        self._deps_checked_at = 0.0

    def check_available(self) -> None:
        """Raise DesktopNotAvailable (with the Debian packages to install) unless the core tools exist.

        Re-checked at most once a second: a user may apt-get install the packages while the agent runs.
        """
        now = time.monotonic()
        if now - self._deps_checked_at < 1.0:
            return
        missing = deps.missing(deps.CORE)
        if missing:
            raise DesktopNotAvailable(missing)
        self._deps_checked_at = now

    # -- VNC ----------------------------------------------------------------------------------------
    def vnc_info(self) -> dict:
        d = self.display
        return {"running": d.running and d.vnc_enabled, "display": d.number, "port": d.vnc_port,
                "unix_socket": str(d.vnc_socket) if d.running else None,
                "password_protected": True, "display_running": d.running}

    async def vnc_start(self, password: str | None) -> dict:
        await self.display.set_vnc(True, password)
        return {**self.vnc_info(), "password": self.display.vnc_password}

    async def vnc_stop(self) -> dict:
        if self.display.running:
            await self.display.set_vnc(False)
        return self.vnc_info()

    # -- display ------------------------------------------------------------------------------------
    async def display_info(self) -> dict:
        _, (w, h), _ = await self.display.xrandr()
        return {"width": w, "height": h, "depth": 24, "refresh_rate": 60, "display": self.display.name,
                "displays": [{"id": 0, "name": self.display.name, "width": w, "height": h, "primary": True}]}

    async def resolutions(self) -> list[dict]:
        _, cur, modes = await self.display.xrandr()
        sizes = sorted(set(modes) | set(COMMON_RESOLUTIONS), reverse=True)
        return [{"width": w, "height": h, "current": (w, h) == cur} for w, h in sizes]

    async def set_resolution(self, width: int, height: int) -> dict:
        await self.display.set_size(int(width), int(height))
        return await self.display_info()

    # -- screenshots / windows ----------------------------------------------------------------------
    async def screenshot(self, region=None) -> bytes:
        return await capture.screenshot(self.display, region)

    async def capture_window(self, wid) -> bytes:
        wid = window_id(wid) if wid not in (None, "") else await self.x11.active_window()
        try:
            x, y, w, h = await self.x11.geometry(wid)
        except Exception as e:  # xdotool fails on an id that is not a window
            raise DesktopNotFound(f"no window with id {wid}", details={"window_id": wid}) from e
        sw, sh = await self.display.size()
        x0, y0 = max(0, x), max(0, y)
        w, h = min(x + w, sw) - x0, min(y + h, sh) - y0
        if w < 1 or h < 1:
            raise DesktopNotFound(f"window {wid} is not on screen", details={"window_id": wid})
        return await capture.screenshot(self.display, (x0, y0, w, h))

    # -- OCR ----------------------------------------------------------------------------------------
    async def ocr(self, region, language: str) -> str:
        return await capture.ocr(self.display, region, language)

    async def find_text(self, text: str, language: str = "eng") -> dict | None:
        return await capture.find_text(self.display, text, language)

    async def wait_for_text(self, text: str, timeout: float) -> dict:
        deadline = time.monotonic() + max(0.0, float(timeout))
        while True:
            found = await self.find_text(text)
            if found:
                return found
            if time.monotonic() >= deadline:
                raise DesktopNotFound(f"text {text!r} did not appear within {timeout:g} s", details={"text": text})
            await asyncio.sleep(0.5)

    # -- debug --------------------------------------------------------------------------------------
    def debug_logs(self) -> list[str]:
        return list(proc.LOG)

    def debug_processes(self) -> list[dict]:
        procs = self.display.processes()
        for rec in self.recorder.recordings.values():
            if rec.process is not None:
                procs.append({"name": f"ffmpeg {rec.id}", "pid": rec.process.pid,
                              "running": rec.process.returncode is None, "exit_code": rec.process.returncode})
        return procs

    async def shutdown(self) -> None:
        await self.recorder.stop_all()
        await self.display.stop()
