"""Run an ASGI sub-application (e.g. the desktop package's) under a path prefix of the agent's server.

Only what such sub-apps need: HTTP with streamed request/response bodies, and WebSockets (already
accepted by the server at upgrade time, so `websocket.accept` is a no-op).
"""
from __future__ import annotations

import asyncio

from .server import Request, StreamResponse


def _scope(kind: str, req: Request, prefix: str) -> dict:
    query = req.raw_target.partition("?")[2]
    return {"type": kind, "asgi": {"version": "3.0"}, "http_version": "1.1", "method": req.method,
            "scheme": "ws" if kind == "websocket" else "http", "path": req.path, "raw_path": req.path.encode(),
            "root_path": "", "query_string": query.encode("latin-1"),
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in req.headers.items()],
            "subprotocols": [p.strip() for p in req.headers.get("sec-websocket-protocol", "").split(",") if p.strip()],
            "client": None, "server": None, "mount_prefix": prefix}


async def http(asgi, prefix: str, req: Request) -> StreamResponse:
    body = req.stream()
    queue: asyncio.Queue = asyncio.Queue(maxsize=8)
    started: asyncio.Future = asyncio.get_running_loop().create_future()

    async def receive() -> dict:
        try:
            chunk = await body.__anext__()
            return {"type": "http.request", "body": chunk, "more_body": True}
        except StopAsyncIteration:
            return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg: dict) -> None:
        if msg["type"] == "http.response.start":
            started.set_result(msg)
        elif msg["type"] == "http.response.body":
            await queue.put(msg.get("body", b""))
            if not msg.get("more_body", False):
                await queue.put(None)

    async def run() -> None:
        try:
            await asgi(_scope("http", req, prefix), receive, send)
        except Exception as e:  # noqa: BLE001
            if not started.done():
                started.set_exception(e)
        finally:
            await queue.put(None)

    task = asyncio.create_task(run())
    start = await started
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", [])]
    ctype = next((v for k, v in headers if k.lower() == "content-type"), "application/octet-stream")
    length = next((int(v) for k, v in headers if k.lower() == "content-length"), None)
    extra = [(k, v) for k, v in headers if k.lower() not in ("content-type", "content-length", "x-request-id")]

    async def chunks():
        try:
            while (chunk := await queue.get()) is not None:
                yield chunk
        finally:
            if not task.done():
                task.cancel()

    return StreamResponse(chunks(), status=start["status"], content_type=ctype, length=length, headers=extra)


async def websocket(asgi, prefix: str, ws) -> None:
    connected = False

    async def receive() -> dict:
        nonlocal connected
        if not connected:
            connected = True
            return {"type": "websocket.connect"}
        msg = await ws.receive()
        if msg is None:
            return {"type": "websocket.disconnect", "code": 1000}
        return {"type": "websocket.receive", "text": msg} if isinstance(msg, str) else \
            {"type": "websocket.receive", "bytes": msg}

    async def send(msg: dict) -> None:
        t = msg["type"]
        if t == "websocket.send":
            if msg.get("bytes") is not None:
                await ws.send_bytes(msg["bytes"])
            else:
                await ws.send_text(msg.get("text") or "")
        elif t == "websocket.close":
            await ws.close(msg.get("code", 1000), msg.get("reason") or "")

    await asgi(_scope("websocket", ws.request, prefix), receive, send)
