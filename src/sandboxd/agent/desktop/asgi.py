"""HTTP glue with no web framework: a framework-neutral `handle()` and a plain ASGI app on top of it
(HTTP routes + the VNC WebSocket tunnel), so any agent server (Starlette, uvicorn, h11...) can mount it."""
from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qsl

from sandboxd.errors import SandboxdError

from ..errors import status_of
from .errors import DesktopError
from .routes import WS_PATH, FileBody, Raw, Req, match
from .service import DesktopService

log = logging.getLogger("sandboxd.agent.desktop")
MAX_BODY = 1 << 20


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    file: Path | None = None  # stream this file instead of body


def error_body(status: int, code: str, message: str, request_id: str, details: dict | None = None) -> dict:
    """The hybrid agent error body (docs/clients/hopx.md) read by the sync, async and JS clients."""
    details = details or {}
    body = {"error": message, "message": message, "code": code, "details": details,
            "request_id": request_id, "status": status,
            "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")}
    if "missing_dependencies" in details:  # the async SDK reads it at the top level
        body["missing_dependencies"] = details["missing_dependencies"]
    return body


def _json(status: int, data, rid: str) -> Response:
    return Response(status, [("content-type", "application/json"), ("x-request-id", rid)],
                    json.dumps(data).encode())


def normalize(path: str) -> str:
    # Mounted under /desktop by a framework, the path may arrive without its prefix.
    return path if path.startswith("/desktop") else "/desktop" + (path if path.startswith("/") else "/" + path)


async def handle(service: DesktopService, method: str, path: str, query: str | bytes, body: bytes,
                 headers: dict[str, str]) -> Response:
    """Answer one desktop request. `headers` has lower-case names."""
    rid = headers.get("x-request-id") or "req_" + uuid.uuid4().hex[:16]
    path = normalize(path)
    handler, params, known = match(method.upper(), path)
    if handler is None:
        status, code = (405, "METHOD_NOT_ALLOWED") if known else (404, "NOT_FOUND")
        return _json(status, error_body(status, code, f"{method} {path} is not a desktop endpoint", rid), rid)
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    try:
        data = json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError) as e:
        return _json(400, error_body(400, "INVALID_JSON", f"invalid JSON body: {e}", rid), rid)
    if not isinstance(data, dict):
        return _json(400, error_body(400, "INVALID_REQUEST", "the request body must be a JSON object", rid), rid)
    req = Req(method.upper(), path, dict(parse_qsl(query)), data, headers, params)
    try:
        service.check_available()
        result = await handler(service, req)
    except SandboxdError as e:
        status = status_of(e)
        return _json(status, error_body(status, e.code, e.message, rid, e.details), rid)
    except Exception as e:  # a bug, not a user error: log it, answer in the contract's shape
        log.exception("desktop %s %s failed", method, path)
        return _json(500, error_body(500, "INTERNAL_ERROR", f"{type(e).__name__}: {e}", rid), rid)
    if isinstance(result, Raw):
        return Response(200, [("content-type", result.content_type), ("x-request-id", rid),
                              ("content-length", str(len(result.body)))], result.body)
    if isinstance(result, FileBody):
        size = result.path.stat().st_size
        return Response(200, [("content-type", result.content_type), ("x-request-id", rid),
                              ("content-length", str(size)),
                              ("content-disposition", f'attachment; filename="{result.filename}"')],
                        file=result.path)
    return _json(200, result, rid)


class DesktopASGI:
    """ASGI app for /desktop/* (HTTP) and the VNC tunnel at /desktop/vnc/websocket (WebSocket)."""

    def __init__(self, service: DesktopService | None = None):
        self.service = service or DesktopService()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await self.service.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope, receive, send):
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                rid = headers.get("x-request-id") or "req_" + uuid.uuid4().hex[:16]
                resp = _json(413, error_body(413, "INVALID_REQUEST", "request body too large", rid), rid)
                break
            chunks.append(chunk)
            more = msg.get("more_body", False)
        else:
            resp = await handle(self.service, scope["method"], scope["path"], scope.get("query_string", b""),
                                b"".join(chunks), headers)
        await send({"type": "http.response.start", "status": resp.status,
                    "headers": [(k.encode(), v.encode()) for k, v in resp.headers]})
        if resp.file is None:
            await send({"type": "http.response.body", "body": resp.body})
            return
        with open(resp.file, "rb") as f:
            while chunk := f.read(256 * 1024):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _websocket(self, scope, receive, send):
        """Bridge WebSocket binary frames to the VNC server's unix socket (noVNC/websockify style)."""
        msg = await receive()
        if msg["type"] != "websocket.connect":
            return
        d = self.service.display
        if normalize(scope["path"]).rstrip("/") != WS_PATH:
            await send({"type": "websocket.close", "code": 4404})
            return
        try:
            self.service.check_available()
        except DesktopError:
            await send({"type": "websocket.close", "code": 4501})
            return
        if not (d.running and d.vnc_enabled):  # POST /desktop/vnc/start first
            await send({"type": "websocket.close", "code": 4409})
            return
        try:
            reader, writer = await asyncio.open_unix_connection(str(d.vnc_socket))
        except OSError:
            await send({"type": "websocket.close", "code": 1011})
            return
        accept = {"type": "websocket.accept"}
        if "binary" in scope.get("subprotocols", []):
            accept["subprotocol"] = "binary"
        await send(accept)

        async def vnc_to_ws():
            while data := await reader.read(65536):
                await send({"type": "websocket.send", "bytes": data})

        async def ws_to_vnc():
            while True:
                m = await receive()
                if m["type"] == "websocket.disconnect":
                    return
                data = m.get("bytes") or (m.get("text") or "").encode()
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.ensure_future(vnc_to_ws()), asyncio.ensure_future(ws_to_vnc())]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
            if tasks[0] in done:  # the VNC side ended first: tell the client
                try:
                    await send({"type": "websocket.close", "code": 1000})
                except Exception:
                    pass
        finally:
            writer.close()
