"""The desktop route table: every path of docs/clients/hopx.md §3.6, in the Python SDK's, the JS SDK's
and the docs' spellings, each a thin handler that reads arguments and calls DesktopService."""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

from .errors import DesktopInvalid
from .service import DesktopService

WS_PATH = "/desktop/vnc/websocket"


@dataclass
class Req:
    method: str
    path: str
    query: dict[str, str]
    body: dict[str, Any]
    headers: dict[str, str]  # lower-case names
    params: dict[str, str] = field(default_factory=dict)

    def arg(self, *names: str, default: Any = None) -> Any:
        for n in names:
            if n in self.body and self.body[n] is not None:
                return self.body[n]
            if n in self.query:
                return self.query[n]
        return default

    def int(self, *names: str, default: int | None = None) -> int:
        v = self.arg(*names, default=default)
        if v is None:
            raise DesktopInvalid(f"missing parameter: {names[0]}")
        try:
            return int(v)
        except (TypeError, ValueError):
            raise DesktopInvalid(f"{names[0]} must be an integer") from None

    def text(self, *names: str, default: str | None = None) -> str:
        v = self.arg(*names, default=default)
        if v is None:
            raise DesktopInvalid(f"missing parameter: {names[0]}")
        return str(v)


@dataclass
class Raw:
    body: bytes
    content_type: str = "image/png"


@dataclass
class FileBody:
    path: Path
    content_type: str
    filename: str


Handler = Callable[[DesktopService, Req], Awaitable[Any]]
ROUTES: list[tuple[str, re.Pattern, Handler]] = []


def route(methods: str, *paths: str):
    def deco(fn: Handler) -> Handler:
        for p in paths:
            rx = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", p) + "/?$")
            for m in methods.split():
                ROUTES.append((m, rx, fn))
        return fn
    return deco


def match(method: str, path: str) -> tuple[Handler | None, dict[str, str], bool]:
    """(handler, path params, path_known): path_known tells 405 from 404."""
    known = False
    for m, rx, fn in ROUTES:
        hit = rx.match(path)
        if hit:
            known = True
            if m == method:
                return fn, hit.groupdict(), True
    return None, {}, known


def ok(**extra) -> dict:
    return {"success": True, **extra}


def _ws_url(req: Req) -> str:
    proto = req.headers.get("x-forwarded-proto", "http")
    host = req.headers.get("x-forwarded-host") or req.headers.get("host", "127.0.0.1")
    return f"{'wss' if proto == 'https' else 'ws'}://{host}{WS_PATH}"


def _region(req: Req) -> tuple[int, int, int, int]:
    return req.int("x"), req.int("y"), req.int("width"), req.int("height")


# -- VNC ------------------------------------------------------------------------------------------
def _vnc(req: Req, info: dict) -> dict:
    url = _ws_url(req)
    return {**info, "url": url, "websocket_url": url}


@route("GET", "/desktop/vnc/status", "/desktop/vnc/info")
async def vnc_status(s: DesktopService, req: Req):
    return _vnc(req, s.vnc_info())


@route("POST GET", "/desktop/vnc/start")
async def vnc_start(s: DesktopService, req: Req):
    password = req.arg("password")
    return _vnc(req, await s.vnc_start(str(password) if password else None))


@route("POST GET", "/desktop/vnc/stop")
async def vnc_stop(s: DesktopService, req: Req):
    return _vnc(req, await s.vnc_stop())


@route("POST", "/desktop/vnc")
async def vnc_docs(s: DesktopService, req: Req):
    action = req.text("action", default="start")
    if action == "stop":
        return await vnc_stop(s, req)
    if action == "status":
        return await vnc_status(s, req)
    return await vnc_start(s, req)


# -- mouse ----------------------------------------------------------------------------------------
@route("POST", "/desktop/mouse/click")
async def mouse_click(s: DesktopService, req: Req):
    await s.x11.click(req.int("x"), req.int("y"), req.text("button", default="left"), req.int("clicks", default=1))
    return ok()


@route("POST", "/desktop/mouse/double_click", "/desktop/mouse/double-click", "/desktop/mouse/doubleclick")
async def mouse_double_click(s: DesktopService, req: Req):
    await s.x11.click(req.int("x"), req.int("y"), req.text("button", default="left"), 2)
    return ok()


@route("POST", "/desktop/mouse/move")
async def mouse_move(s: DesktopService, req: Req):
    await s.x11.move(req.int("x"), req.int("y"))
    return ok()


@route("POST", "/desktop/mouse/drag", "/desktop/x11/drag_drop")
async def mouse_drag(s: DesktopService, req: Req):
    await s.x11.drag(req.int("from_x", "fromX"), req.int("from_y", "fromY"), req.int("to_x", "toX"),
                     req.int("to_y", "toY"), req.text("button", default="left"))
    return ok()


@route("POST", "/desktop/mouse/scroll")
async def mouse_scroll(s: DesktopService, req: Req):
    x = req.int("x") if req.arg("x") is not None else None
    y = req.int("y") if req.arg("y") is not None else None
    if "delta_y" in req.body or "deltaY" in req.body:  # JS spelling {x, y, delta_y}
        try:
            delta = float(req.arg("delta_y", "deltaY", default=0))
        except (TypeError, ValueError):
            raise DesktopInvalid("delta_y must be a number") from None
        await s.x11.scroll_delta(x, y, delta)
    else:
        await s.x11.scroll(req.int("amount", default=3), req.text("direction", default="down"), x, y)
    return ok()


@route("POST", "/desktop/mouse")
async def mouse_docs(s: DesktopService, req: Req):
    action = req.text("action", default="click")
    handler = {"click": mouse_click, "double_click": mouse_double_click, "move": mouse_move,
               "drag": mouse_drag, "scroll": mouse_scroll}.get(action)
    if handler is None:
        raise DesktopInvalid(f"unknown mouse action: {action}")
    return await handler(s, req)


# -- keyboard -------------------------------------------------------------------------------------
@route("POST", "/desktop/keyboard/type")
async def key_type(s: DesktopService, req: Req):
    await s.x11.type(req.text("text"), req.int("delay_ms", "delay", default=12))
    return ok()


@route("POST", "/desktop/keyboard/press")
async def key_press(s: DesktopService, req: Req):
    await s.x11.press(req.text("key"))
    return ok()


@route("POST", "/desktop/keyboard/combination", "/desktop/x11/hotkey")
async def key_combination(s: DesktopService, req: Req):
    keys = req.arg("keys")
    if keys is None:
        keys = list(req.arg("modifiers", default=[])) + [req.text("key")]
    if not isinstance(keys, list):
        raise DesktopInvalid("keys must be a list")
    await s.x11.combination(keys)
    return ok()


@route("POST", "/desktop/keyboard")
async def key_docs(s: DesktopService, req: Req):
    action = req.text("action", default="type")
    handler = {"type": key_type, "press": key_press, "combination": key_combination,
               "hotkey": key_combination}.get(action)
    if handler is None:
        raise DesktopInvalid(f"unknown keyboard action: {action}")
    return await handler(s, req)


# -- clipboard ------------------------------------------------------------------------------------
@route("GET", "/desktop/clipboard/get", "/desktop/clipboard")
async def clip_get(s: DesktopService, req: Req):
    text = await s.x11.clipboard_get()
    return {"text": text, "content": text}


@route("POST", "/desktop/clipboard/set", "/desktop/clipboard")
async def clip_set(s: DesktopService, req: Req):
    await s.x11.clipboard_set(req.text("text", "content"))
    return ok()


@route("GET", "/desktop/clipboard/history")
async def clip_history(s: DesktopService, req: Req):
    history = list(reversed(s.x11.clipboard_history))  # newest first
    return {"history": history, "count": len(history)}


# -- screenshots ----------------------------------------------------------------------------------
@route("GET", "/desktop/screenshot")
async def screenshot(s: DesktopService, req: Req):
    return Raw(await s.screenshot())


@route("POST GET", "/desktop/screenshot/region")
async def screenshot_region(s: DesktopService, req: Req):
    return Raw(await s.screenshot(_region(req)))


@route("POST", "/desktop/screenshot")
async def screenshot_docs(s: DesktopService, req: Req):
    """The documented JSON form (ScreenshotResponse): base64 PNG plus its size."""
    region = _region(req) if req.arg("width") is not None else None
    png = await s.screenshot(region)
    w, h = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # PNG IHDR
    return {"image": base64.b64encode(png).decode(), "format": "png", "width": w, "height": h,
            "size": len(png), "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")}


@route("GET", "/desktop/x11/capture_window")
async def capture_window(s: DesktopService, req: Req):
    return Raw(await s.capture_window(req.arg("window_id", "id")))


# -- recording ------------------------------------------------------------------------------------
@route("POST", "/desktop/recording/start")
async def rec_start(s: DesktopService, req: Req):
    return await s.recorder.start(req.int("fps", default=10), req.arg("format", default=None),
                                  str(req.arg("quality", default="medium")), req.arg("output_file", "outputFile"))


@route("POST GET", "/desktop/recording/stop")
async def rec_stop(s: DesktopService, req: Req):
    return await s.recorder.stop(req.arg("recording_id", "id"))


@route("GET", "/desktop/recording/status")
async def rec_status(s: DesktopService, req: Req):
    return s.recorder.status(req.arg("id", "recording_id"))


@route("GET", "/desktop/recording/download", "/desktop/recording/{rid}/download")
async def rec_download(s: DesktopService, req: Req):
    rec = s.recorder.file(req.params.get("rid") or req.arg("id", "recording_id"))
    return FileBody(rec.path, f"video/{rec.format}", rec.path.name)


@route("POST", "/desktop/recording")
async def rec_docs(s: DesktopService, req: Req):
    action = req.text("action", default="start")
    handler = {"start": rec_start, "stop": rec_stop, "status": rec_status}.get(action)
    if handler is None:
        raise DesktopInvalid(f"unknown recording action: {action}")
    return await handler(s, req)


# -- windows --------------------------------------------------------------------------------------
@route("GET", "/desktop/windows", "/desktop/windows/list")
async def windows(s: DesktopService, req: Req):
    wins = await s.x11.windows()
    return {"windows": wins, "count": len(wins)}


@route("POST", "/desktop/windows/focus")
async def win_focus(s: DesktopService, req: Req):
    await s.x11.focus(req.arg("window_id", "id"))
    return ok()


@route("POST", "/desktop/windows/close")
async def win_close(s: DesktopService, req: Req):
    await s.x11.close(req.arg("window_id", "id"))
    return ok()


@route("POST", "/desktop/windows/minimize")
async def win_minimize(s: DesktopService, req: Req):
    await s.x11.minimize(req.arg("window_id", "id"))
    return ok()


@route("POST", "/desktop/windows/resize")
async def win_resize(s: DesktopService, req: Req):
    await s.x11.resize(req.arg("window_id", "id"), req.int("width"), req.int("height"))
    return ok()


# -- display --------------------------------------------------------------------------------------
@route("GET", "/desktop/display", "/desktop/display/info")
async def display_info(s: DesktopService, req: Req):
    return await s.display_info()


@route("GET", "/desktop/display/available", "/desktop/display/resolutions")
async def display_available(s: DesktopService, req: Req):
    return {"resolutions": await s.resolutions()}


@route("POST", "/desktop/display/set", "/desktop/display/resolution", "/desktop/display")
async def display_set(s: DesktopService, req: Req):
    return await s.set_resolution(req.int("width"), req.int("height"))


# -- OCR ------------------------------------------------------------------------------------------
@route("POST", "/desktop/x11/ocr")
async def ocr(s: DesktopService, req: Req):
    region = _region(req) if req.arg("width") is not None else None
    text = await s.ocr(region, str(req.arg("language", "lang", default="eng")))
    return {"text": text}


@route("POST", "/desktop/x11/find_element")
async def find_element(s: DesktopService, req: Req):
    return {"element": await s.find_text(req.text("text"))}


@route("POST", "/desktop/x11/wait_for")
async def wait_for(s: DesktopService, req: Req):
    return {"element": await s.wait_for_text(req.text("text"), float(req.arg("timeout", default=30)))}


@route("POST", "/desktop/x11/get_bounds")
async def get_bounds(s: DesktopService, req: Req):
    el = await s.find_text(req.text("text"))
    return {"found": el is not None, **(el or {})}


# -- debug ----------------------------------------------------------------------------------------
@route("GET", "/desktop/debug/logs")
async def debug_logs(s: DesktopService, req: Req):
    return {"logs": s.debug_logs()}


@route("GET", "/desktop/debug/processes")
async def debug_processes(s: DesktopService, req: Req):
    return {"processes": s.debug_processes()}
