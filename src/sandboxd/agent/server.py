"""A small HTTP/1.1 + WebSocket server on asyncio, h11 and wsproto.

Why not FastAPI/uvicorn: the agent runs in every sandbox, and that stack costs ~200 ms to import and
~36 MiB idle. h11 + wsproto are pure-Python protocol state machines that import in a
few ms, and streaming request/response bodies stay explicit (1 GiB uploads never sit in memory).
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import h11

from sandboxd.errors import SandboxdError

from .errors import BodyTooLarge, InvalidJSON, InvalidRequest

try:  # the builtin module: hashlib would load OpenSSL's libcrypto (~3 MiB) for one SHA-1
    from _sha1 import sha1 as _sha1
except ImportError:  # pragma: no cover
    from hashlib import sha1 as _sha1

MAX_BODY = 512 * 1024 * 1024  # a JSON body (e.g. a base64 file write) is read whole; bigger uploads stream
CHUNK = 256 * 1024
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(data, default=str).encode())


@dataclass
class StreamResponse:
    """A body produced chunk by chunk (sent with chunked transfer-encoding unless length is known)."""

    chunks: AsyncIterator[bytes]
    status: int = 200
    content_type: str = "application/octet-stream"
    length: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


def _split_target(target: str) -> tuple[str, str]:
    """(path, query) of a request target. urllib.parse (and the ipaddress module it loads) costs ~2 ms of
    every agent start; plain origin-form targets, i.e. nearly all of them, need only a partition."""
    if target.startswith("/") and not target.startswith("//") and "#" not in target:
        path, _, query = target.partition("?")
        return path, query
    from urllib.parse import urlsplit

    parts = urlsplit(target)
    return parts.path, parts.query


class Request:
    def __init__(self, conn: "Connection", event: h11.Request):
        self._conn = conn
        self.method = event.method.decode()
        target = event.target.decode("latin-1")
        self.raw_target = target
        path, query = _split_target(target)
        self.path = path or "/"
        if query:
            # Form-style '+' means space (httpx/axios params), except when the client encodes spaces as %20:
            # then it is the HopX client's raw `?path={path}` and a '+' is a literal plus.
            if "%" in query or "+" in query:
                from urllib.parse import unquote, unquote_plus

                dec: Callable[[str], str] = unquote if "%20" in query else unquote_plus
            else:
                dec = str  # nothing to decode
            self.query = {dec(k): dec(v) for k, _, v in (p.partition("=") for p in query.split("&") if p)}
        else:
            self.query = {}
        self.headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
        self.path_params: dict[str, str] = {}
        self.app: Any = None  # the dispatching App: module-level handlers reach its services through it
        self.request_id = self.headers.get("x-request-id") or "req_" + os.urandom(8).hex()
        self._consumed = False

    async def stream(self) -> AsyncIterator[bytes]:
        if self._consumed:
            return
        self._consumed = True
        while True:
            ev = await self._conn.next_event()
            if isinstance(ev, h11.Data):
                yield bytes(ev.data)
            elif isinstance(ev, h11.EndOfMessage):
                return
            else:
                raise InvalidRequest("malformed request body")

    async def body(self, limit: int = MAX_BODY) -> bytes:
        buf = bytearray()
        async for chunk in self.stream():
            buf += chunk
            if len(buf) > limit:
                raise BodyTooLarge(f"request body larger than {limit} bytes")
        return bytes(buf)

    async def json(self) -> dict:
        raw = await self.body()
        if not raw.strip():
            return {}  # clients send Content-Type: application/json with no body on some POSTs
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise InvalidJSON(f"invalid JSON body: {e}") from None
        if not isinstance(data, dict):
            raise InvalidJSON("JSON body must be an object")
        return data

    @property
    def is_websocket(self) -> bool:
        return "websocket" in self.headers.get("upgrade", "").lower()


# Spacing of consecutive messages on the HopX streaming routes (see WebSocket.min_gap).
STREAM_GAP = 0.02


class WebSocketClosed(Exception):
    pass


class WebSocket:
    """Server side of an upgraded connection (RFC 6455 framing by wsproto)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: Request,
                 leftover: bytes):
        from wsproto.connection import Connection as WSConn, ConnectionType

        self.request = request
        self._reader, self._writer = reader, writer
        self._ws = WSConn(ConnectionType.SERVER)
        self._pending: list[Any] = []
        self.closed = False
        if leftover:
            self._ws.receive_data(leftover)
        self._send_lock = asyncio.Lock()
        # Minimum spacing between consecutive messages, for clients that lose messages arriving in one read:
        # the official JS SDK re-arms `ws.once("message")` after each one, so a second frame in the same TCP
        # read is dropped (a stream then never sees "complete"). HopX's streaming routes set it.
        self.min_gap = 0.0
        self._last_sent = 0.0

    async def receive(self) -> str | bytes | None:
        """Next complete message, or None once the peer closed."""
        from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

        text_parts: list[str] = []
        byte_parts: list[bytes] = []
        while True:
            for ev in self._ws.events():
                if isinstance(ev, TextMessage):
                    text_parts.append(ev.data)
                    if ev.message_finished:
                        return "".join(text_parts)
                elif isinstance(ev, BytesMessage):
                    byte_parts.append(bytes(ev.data))
                    if ev.message_finished:
                        return b"".join(byte_parts)
                elif isinstance(ev, Ping):
                    await self._write(self._ws.send(ev.response()))
                elif isinstance(ev, CloseConnection):
                    if not self.closed:
                        self.closed = True
                        try:
                            await self._write(self._ws.send(ev.response()))
                        except Exception:
                            pass
                    return None
            if self.closed:
                return None
            try:
                data = await self._reader.read(65536)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                self.closed = True
                return None
            self._ws.receive_data(data)

    async def receive_json(self) -> Any:
        while True:
            msg = await self.receive()
            if msg is None:
                return None
            try:
                return json.loads(msg)
            except ValueError:
                continue  # like the clients: skip non-JSON frames

    async def until_closed(self) -> None:
        """Read (and drop) messages until the peer closes: a watch for a client that goes away."""
        while await self.receive() is not None:
            pass

    async def _write(self, data: bytes) -> None:
        async with self._send_lock:
            self._writer.write(data)
            await self._writer.drain()

    async def send_json(self, obj: Any) -> None:
        await self.send_text(json.dumps(obj, default=str))

    async def send_text(self, text: str) -> None:
        from wsproto.events import TextMessage

        await self._send_event(TextMessage(text))

    async def send_bytes(self, data: bytes) -> None:
        from wsproto.events import BytesMessage

        await self._send_event(BytesMessage(data))

    async def _send_event(self, event) -> None:
        if self.closed:
            raise WebSocketClosed()
        if self.min_gap:
            loop = asyncio.get_running_loop()
            wait = self._last_sent + self.min_gap - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_sent = loop.time()
        try:
            await self._write(self._ws.send(event))
        except (ConnectionError, OSError, RuntimeError) as e:
            self.closed = True
            raise WebSocketClosed() from e

    async def close(self, code: int = 1000, reason: str = "") -> None:
        from wsproto.events import CloseConnection

        if self.closed:
            return
        self.closed = True
        try:
            await self._write(self._ws.send(CloseConnection(code=code, reason=reason)))
        except Exception:
            return
        # Closing handshake (RFC 6455 §7.1.1): let the peer answer before the transport goes away, so a
        # client still reading the last frames never sees a reset (websockets' sync client dropped them).
        try:
            await asyncio.wait_for(self._drain_until_close(), 2)
        except (asyncio.TimeoutError, Exception):
            pass

    async def _drain_until_close(self) -> None:
        from wsproto.events import CloseConnection

        while True:
            data = await self._reader.read(65536)
            if not data:
                return
            self._ws.receive_data(data)
            if any(isinstance(ev, CloseConnection) for ev in self._ws.events()):
                return


Handler = Callable[[Request], Awaitable[Any]]


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)

    async def next_event(self):
        while True:
            ev = self.h11.next_event()
            if ev is h11.NEED_DATA:
                try:
                    data = await self.reader.read(CHUNK)
                except (ConnectionError, OSError):
                    data = b""
                self.h11.receive_data(data)
                continue
            return ev

    async def send(self, *events) -> None:
        for ev in events:
            data = self.h11.send(ev)
            if data:
                self.writer.write(data)
        await self.writer.drain()


async def serve_connection(reader, writer, dispatch: Callable[[Request], Awaitable[Any]],
                           on_error: Callable[[Request | None, BaseException], Response], *,
                           tunnels: bool = True) -> None:
    """`tunnels`: CONNECT opens a pipe to a port in the sandbox (the host's socket only)."""
    conn = Connection(reader, writer)
    try:
        while True:
            try:
                ev = await conn.next_event()
            except h11.RemoteProtocolError:
                await _send_bare(conn, 400)
                return
            if isinstance(ev, (h11.ConnectionClosed,)) or ev is h11.PAUSED:
                return
            if not isinstance(ev, h11.Request):
                return
            req = Request(conn, ev)
            if req.method == "CONNECT" and tunnels:  # a pipe to a port in the sandbox (the gateway's user ports)
                from . import tunnel

                try:
                    upstream = await tunnel.open_port(req.raw_target)
                except SandboxdError as e:
                    await _send_result(conn, req, on_error(req, e))
                    return
                await tunnel.pipe(reader, writer, upstream, bytes(conn.h11.trailing_data[0]))
                return
            if req.is_websocket and req.method == "GET":
                await _upgrade(conn, req, dispatch, on_error)
                return
            try:
                result = await dispatch(req)
            except Exception as e:  # noqa: BLE001 - every failure becomes a hybrid error body
                result = on_error(req, e)
            await _send_result(conn, req, result)
            if conn.h11.their_state is h11.SEND_BODY:
                # Handler ignored the body: drain it so keep-alive stays in sync.
                async for _ in req.stream():
                    pass
            if conn.h11.our_state is h11.MUST_CLOSE or conn.h11.their_state is not h11.DONE:
                return
            try:
                conn.h11.start_next_cycle()
            except h11.LocalProtocolError:
                return
    except (ConnectionError, OSError, asyncio.CancelledError, h11.ProtocolError):
        pass
    except Exception:  # noqa: BLE001 - e.g. a response body generator failed mid-stream: drop the connection
        import traceback

        traceback.print_exc()
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def _send_bare(conn: Connection, status: int) -> None:
    try:
        await conn.send(h11.Response(status_code=status, headers=[("content-length", "0"),
                                                                  ("connection", "close")]))
        await conn.send(h11.EndOfMessage())
    except Exception:
        pass


def _headers(req: Request, content_type: str, extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
    h = [("content-type", content_type), ("x-request-id", req.request_id), ("server", "sandboxd-agent")]
    return h + extra


async def _send_result(conn: Connection, req: Request, result: Any) -> None:
    if isinstance(result, StreamResponse):
        headers = _headers(req, result.content_type, result.headers)
        if result.length is not None:
            headers.append(("content-length", str(result.length)))
        await conn.send(h11.Response(status_code=result.status, headers=headers, reason=_reason(result.status)))
        try:
            async for chunk in result.chunks:
                if chunk and req.method != "HEAD":
                    await conn.send(h11.Data(data=chunk))
        finally:
            close = getattr(result.chunks, "aclose", None)
            if close:
                await close()
        await conn.send(h11.EndOfMessage())
        return
    if not isinstance(result, Response):
        result = json_response(result)
    headers = _headers(req, result.content_type, result.headers)
    headers.append(("content-length", str(len(result.body))))
    await conn.send(h11.Response(status_code=result.status, headers=headers, reason=_reason(result.status)))
    if req.method != "HEAD" and result.body:
        await conn.send(h11.Data(data=result.body))
    await conn.send(h11.EndOfMessage())


async def _upgrade(conn: Connection, req: Request, dispatch, on_error) -> None:
    key = req.headers.get("sec-websocket-key", "")
    if not key:
        await _send_result(conn, req, on_error(req, InvalidRequest("missing Sec-WebSocket-Key")))
        return
    # Resolve the route first so an unknown path is a plain 404, not an upgraded socket.
    req.websocket = None  # type: ignore[attr-defined]
    accept = base64.b64encode(_sha1(key.encode() + WS_GUID).digest()).decode()
    leftover, _ = conn.h11.trailing_data
    # Browsers fail the handshake unless one offered subprotocol is echoed (noVNC offers "binary").
    offered = [p.strip() for p in req.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    proto = f"Sec-WebSocket-Protocol: {'binary' if 'binary' in offered else offered[0]}\r\n" if offered else ""
    conn.writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Accept: {accept}\r\n{proto}X-Request-ID: {req.request_id}\r\n\r\n".encode())
    await conn.writer.drain()
    ws = WebSocket(conn.reader, conn.writer, req, bytes(leftover))
    req.websocket = ws  # type: ignore[attr-defined]
    try:
        await dispatch(req)
    except WebSocketClosed:
        pass
    except Exception as e:  # noqa: BLE001
        err = on_error(req, e)
        try:
            await ws.send_json({"type": "error", **json.loads(err.body)})
        except Exception:
            pass
    finally:
        await ws.close()


# Reason phrases of the statuses the agent sends (http.HTTPStatus's wording); `http` builds a 60-member
# enum at import (~1.5 ms of every sandbox start), so it is only imported for a status not listed here.
_REASONS = {200: b"OK", 201: b"Created", 202: b"Accepted", 204: b"No Content", 206: b"Partial Content",
            400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
            405: b"Method Not Allowed", 409: b"Conflict", 413: b"Request Entity Too Large",
            500: b"Internal Server Error", 503: b"Service Unavailable"}


def _reason(status: int) -> bytes:
    phrase = _REASONS.get(status)
    if phrase is not None:
        return phrase
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"
