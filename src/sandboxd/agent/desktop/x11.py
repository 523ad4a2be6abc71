"""Mouse, keyboard, clipboard and windows, driven with xdotool, wmctrl, xprop and xclip."""
from __future__ import annotations

import asyncio
import math
import re
from collections import deque

from . import deps, proc
from .display import Display
from .errors import DesktopInvalid, DesktopNotAvailable, DesktopNotFound

BUTTONS = {"left": "1", "middle": "2", "right": "3", "1": "1", "2": "2", "3": "3"}
SCROLL = {"up": "4", "down": "5", "left": "6", "right": "7"}
# Friendly key names clients send -> X keysyms xdotool understands.
KEYS = {
    "enter": "Return", "return": "Return", "esc": "Escape", "escape": "Escape", "tab": "Tab",
    "backspace": "BackSpace", "delete": "Delete", "del": "Delete", "space": "space", "up": "Up",
    "down": "Down", "left": "Left", "right": "Right", "home": "Home", "end": "End", "pageup": "Prior",
    "pagedown": "Next", "page_up": "Prior", "page_down": "Next", "insert": "Insert",
    "ctrl": "ctrl", "control": "ctrl", "alt": "alt", "shift": "shift", "super": "super", "meta": "super",
    "cmd": "super", "win": "super",
}


def keysym(key: str) -> str:
    key = str(key).strip()
    if not key:
        raise DesktopInvalid("key must not be empty")
    low = key.lower()
    if low in KEYS:
        return KEYS[low]
    if re.fullmatch(r"f([1-9]|1[0-9]|2[0-4])", low):
        return low.upper()
    return key


def chord(parts: list[str]) -> str:
    """['ctrl', 'shift', 't'] -> 'ctrl+shift+t'; a part may itself be 'ctrl+c'."""
    names = [keysym(p) for part in parts for p in str(part).split("+") if p.strip()]
    if not names:
        raise DesktopInvalid("no keys given")
    return "+".join(names)


def window_id(value) -> int:
    """Window ids travel as ints (WindowInfo.id is an int); accept '0x1a00003' and '27262979' too."""
    try:
        if isinstance(value, str):
            return int(value, 16) if value.lower().startswith("0x") else int(value)
        return int(value)
    except (TypeError, ValueError):
        raise DesktopInvalid(f"invalid window_id: {value!r}") from None


# No `mousemove --sync`: it waits for the pointer to move, forever when it is already there. The warp
# and the XTEST click travel in order on one connection, so the click lands at the new position anyway.


class X11:
    def __init__(self, display: Display):
        self.d = display
        self.clipboard_history: deque[str] = deque(maxlen=50)

    async def _x(self, *argv: str, timeout: float = 15.0) -> bytes:
        await self.d.ensure()
        return (await proc.run(list(argv), self.d.env, timeout=timeout))[1]

    # -- mouse --------------------------------------------------------------------------------------
    async def click(self, x: int, y: int, button: str = "left", clicks: int = 1) -> None:
        b = BUTTONS.get(str(button).lower())
        if b is None:
            raise DesktopInvalid(f"unknown mouse button: {button!r}")
        clicks = max(1, min(int(clicks), 10))
        # mousedown/mouseup rather than xdotool's `click`, which costs ~100 ms per call; a short gap
        # between the clicks of a double click keeps it within every toolkit's double-click time.
        seq: list[str] = []
        for i in range(clicks):
            seq += (["sleep", "0.04"] if i else []) + ["mousedown", b, "mouseup", b]
        await self._x("xdotool", "mousemove", str(int(x)), str(int(y)), *seq)

    async def move(self, x: int, y: int) -> None:
        await self._x("xdotool", "mousemove", str(int(x)), str(int(y)))

    async def drag(self, fx: int, fy: int, tx: int, ty: int, button: str = "left") -> None:
        b = BUTTONS.get(str(button).lower())
        if b is None:
            raise DesktopInvalid(f"unknown mouse button: {button!r}")
        # Intermediate moves and pauses: toolkits only start a drag after motion with the button held.
        mx, my = (int(fx) + int(tx)) // 2, (int(fy) + int(ty)) // 2
        await self._x("xdotool", "mousemove", str(int(fx)), str(int(fy)), "mousedown", b,
                      "sleep", "0.1", "mousemove", str(mx), str(my), "sleep", "0.1",
                      "mousemove", str(int(tx)), str(int(ty)), "sleep", "0.1", "mouseup", b)

    async def scroll(self, amount: int, direction: str = "down", x: int | None = None, y: int | None = None) -> None:
        b = SCROLL.get(str(direction).lower())
        if b is None:
            raise DesktopInvalid(f"unknown scroll direction: {direction!r}")
        amount = max(1, min(int(amount), 100))
        argv = ["xdotool"]
        if x is not None and y is not None:
            argv += ["mousemove", str(int(x)), str(int(y))]
        await self._x(*argv, *(["mousedown", b, "mouseup", b] * amount))  # one wheel notch per press

    async def scroll_delta(self, x, y, delta_y: float) -> None:
        """JS spelling: a wheel delta; browsers use ~100 per notch, small values are taken as notches."""
        dy = float(delta_y or 0)
        if dy == 0:
            return
        notches = math.ceil(abs(dy) / 100) if abs(dy) >= 20 else math.ceil(abs(dy))
        await self.scroll(notches, "down" if dy > 0 else "up", x, y)

    # -- keyboard -----------------------------------------------------------------------------------
    async def type(self, text: str, delay_ms: int = 12) -> None:
        if not isinstance(text, str):
            raise DesktopInvalid("text must be a string")
        if text:
            delay = str(max(0, min(int(delay_ms), 1000)))
            await self._x("xdotool", "type", "--delay", delay, "--", text, timeout=30 + len(text) * 0.2)

    async def press(self, key: str) -> None:
        await self._x("xdotool", "key", "--", chord([key]))

    async def combination(self, keys: list[str]) -> None:
        await self._x("xdotool", "key", "--", chord(keys))

    # -- clipboard ----------------------------------------------------------------------------------
    def _need_xclip(self) -> None:
        missing = deps.missing(deps.CLIPBOARD)
        if missing:
            raise DesktopNotAvailable(missing)

    async def clipboard_get(self) -> str:
        self._need_xclip()
        await self.d.ensure()
        code, out, _ = await proc.run(["xclip", "-selection", "clipboard", "-o"], self.d.env, check=False)
        text = out.decode(errors="replace") if code == 0 else ""  # exit 1 = the clipboard is empty
        if text and (not self.clipboard_history or self.clipboard_history[-1] != text):
            self.clipboard_history.append(text)
        return text

    async def clipboard_set(self, text: str) -> None:
        self._need_xclip()
        if not isinstance(text, str):
            raise DesktopInvalid("text must be a string")
        await self.d.ensure()
        # xclip forks a child that owns the selection until another client takes it over.
        await proc.run(["xclip", "-selection", "clipboard", "-i"], self.d.env, data=text.encode(), capture=False)
        self.clipboard_history.append(text)

    # -- windows ------------------------------------------------------------------------------------
    async def windows(self) -> list[dict]:
        out = (await self._x("wmctrl", "-lpG")).decode(errors="replace")
        active = await self._active()
        result = []
        for line in out.splitlines():
            parts = line.split(None, 8)
            if len(parts) < 8:
                continue
            wid = int(parts[0], 16)
            state = await self._state(wid)
            result.append({
                "id": wid, "title": parts[8] if len(parts) > 8 else "", "desktop": int(parts[1]),
                "pid": int(parts[2]) or None, "x": int(parts[3]), "y": int(parts[4]),
                "width": int(parts[5]), "height": int(parts[6]), "is_active": wid == active,
                "is_minimized": "_NET_WM_STATE_HIDDEN" in state,
            })
        return result

    async def _active(self) -> int | None:
        out = (await self._x("xprop", "-root", "_NET_ACTIVE_WINDOW")).decode()
        m = re.search(r"window id # (0x[0-9a-f]+)", out)
        return int(m.group(1), 16) if m else None

    async def _state(self, wid: int) -> str:
        code, out, _ = await proc.run(["xprop", "-id", hex(wid), "_NET_WM_STATE"], self.d.env, check=False)
        return out.decode(errors="replace") if code == 0 else ""

    async def _known(self, value) -> str:
        wid = window_id(value)
        ids = {w["id"] for w in await self.windows()}
        if wid not in ids:
            raise DesktopNotFound(f"no window with id {wid}", details={"window_id": wid})
        return hex(wid)

    async def focus(self, value) -> None:
        await self._x("wmctrl", "-i", "-a", await self._known(value))

    async def close(self, value) -> None:
        await self._x("wmctrl", "-i", "-c", await self._known(value))

    async def minimize(self, value) -> None:
        wid = await self._known(value)
        await self._x("xdotool", "windowminimize", wid)  # --sync would hang on an already minimized window
        for _ in range(40):  # answer once the window manager has hidden it
            if "_NET_WM_STATE_HIDDEN" in await self._state(int(wid, 16)):
                return
            await asyncio.sleep(0.05)

    async def resize(self, value, width: int, height: int) -> None:
        if int(width) < 1 or int(height) < 1:
            raise DesktopInvalid("width and height must be positive")
        wid = await self._known(value)
        await self._x("wmctrl", "-i", "-r", wid, "-b", "remove,maximized_vert,maximized_horz")
        await self._x("wmctrl", "-i", "-r", wid, "-e", f"0,-1,-1,{int(width)},{int(height)}")

    async def geometry(self, value) -> tuple[int, int, int, int]:
        """Absolute (x, y, width, height) of a window's client area."""
        wid = window_id(value)
        out = (await self._x("xdotool", "getwindowgeometry", "--shell", str(wid))).decode()
        vals = dict(line.split("=", 1) for line in out.split() if "=" in line)
        return int(vals["X"]), int(vals["Y"]), int(vals["WIDTH"]), int(vals["HEIGHT"])

    async def active_window(self) -> int:
        wid = await self._active()
        if not wid:
            raise DesktopNotFound("no window is active")
        return wid
