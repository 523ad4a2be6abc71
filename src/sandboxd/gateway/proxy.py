"""A streaming HTTP/1.1 reverse proxy from one TCP port to many agents' unix sockets.

The sandbox is picked per request by a chain of resolvers (default: the sandbox JWT in
`Authorization: Bearer`; the E2B dialect adds one for the `E2b-Sandbox-Id` header). Requests are framed
(Content-Length / chunked / until-close) so a keep-alive client connection may address different
sandboxes request by request, and bodies are piped chunk by chunk with backpressure, never buffered
whole. A 101 response (WebSocket) turns the connection into a raw two-way pipe. Upstream connections
are pooled per socket.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from sandboxd.gateway.heads import replace_headers

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
HEAD_LIMIT = 64 * 1024
IDLE_REUSE = 4.0  # seconds: an upstream connection idle longer is not reused for a request with a body


class GatewayError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or {}


@dataclass
class Head:
    raw: bytes
    method: str
    target: str
    version: str
    headers: dict[str, str]  # lower-cased names, last value wins (enough for routing and framing)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass
class Target:
    socket: Path
    sandbox_id: str
    port: int | None = None  # a port a process in the sandbox listens on (through the agent's CONNECT)


Resolver = Callable[[Head], Awaitable[Target | None]]

REASONS = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 409: "Conflict", 413: "Payload Too Large",
           431: "Request Header Fields Too Large", 502: "Bad Gateway", 503: "Service Unavailable"}


def parse_head(raw: bytes, request: bool) -> Head:
    lines = raw[:-4].split(b"\r\n")
    first = lines[0].decode("latin-1")
    parts = first.split(" ", 2)
    if len(parts) < 2:
        raise GatewayError(400, "INVALID_REQUEST", "malformed HTTP start line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise GatewayError(400, "INVALID_REQUEST", "malformed header line")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    if request:
        if len(parts) != 3:
            raise GatewayError(400, "INVALID_REQUEST", "malformed request line")
        return Head(raw, parts[0], parts[1], parts[2], headers)
    return Head(raw, "", parts[1], parts[0], headers)  # response: target holds the status code


def error_bytes(status: int, code: str, message: str, details: dict | None = None, close: bool = False) -> bytes:
    rid = "req_" + secrets.token_hex(12)
    details = details or {}
    body = json.dumps({
        "error": {"message": message, "code": code, "request_id": rid, "details": details},
        "code": code, "message": message, "request_id": rid, "details": details,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }).encode()
    head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Request-ID: {rid}\r\n")
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


async def read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial.strip():
            return None
        raise GatewayError(400, "INVALID_REQUEST", "connection closed inside a request head")
    except asyncio.LimitOverrunError:
        raise GatewayError(431, "INVALID_REQUEST", "request head too large")


async def copy_exact(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
    while n > 0:
        chunk = await reader.read(min(n, CHUNK))
        if not chunk:
            raise ConnectionError("peer closed in the middle of a body")
        writer.write(chunk)
        n -= len(chunk)
        await writer.drain()


async def copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        line = await reader.readuntil(b"\r\n")
        writer.write(line)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ConnectionError("bad chunk size") from None
        if size == 0:
            while True:  # trailers, then the empty line
                trailer = await reader.readuntil(b"\r\n")
                writer.write(trailer)
                if trailer == b"\r\n":
                    await writer.drain()
                    return
        await copy_exact(reader, writer, size + 2)


async def copy_until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        chunk = await reader.read(CHUNK)
        if not chunk:
            return
        writer.write(chunk)
        await writer.drain()


def body_framing(head: Head) -> tuple[str, int]:
    te = head.header("transfer-encoding")
    if te and "chunked" in te.lower():
        return "chunked", 0
    cl = head.header("content-length")
    if cl is not None:
        if not cl.isdigit():
            raise GatewayError(400, "INVALID_REQUEST", "bad Content-Length")
        return "length", int(cl)
    return "none", 0


async def copy_body(kind: str, n: int, reader, writer) -> None:
    if kind == "chunked":
        await copy_chunked(reader, writer)
    elif kind == "length" and n:
        await copy_exact(reader, writer, n)
    elif kind == "eof":
        await copy_until_eof(reader, writer)


def wants_close(head: Head) -> bool:
    conn = (head.header("connection") or "").lower()
    if head.version == "HTTP/1.0":
        return "keep-alive" not in conn
    return "close" in conn


class Upstream:
    __slots__ = ("reader", "writer", "idle_since", "reused")

    def __init__(self, reader, writer):
        self.reader, self.writer, self.idle_since, self.reused = reader, writer, time.monotonic(), False


class Gateway:
    def __init__(self, resolvers: list[Resolver] | None = None, public_host: str | None = None):
        # E2B (and later routing schemes) insert their resolver at the front of this list.
        self.resolvers: list[Resolver] = list(resolvers or [])
        # The configured public URL (settings.public_host), authoritative for X-Forwarded-Host/-Proto;
        # without one, what the client (or a proxy in front of us) sent is forwarded.
        self.public = urlsplit(public_host) if public_host else None
        self._pools: dict[Path, list[Upstream]] = {}
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task] = set()

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._client, host, port, limit=HEAD_LIMIT, reuse_address=True)

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server:
            self._server.close()
        for t in list(self._conns):
            t.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        for pool in self._pools.values():
            for up in pool:
                up.writer.close()
        self._pools.clear()

    def forget(self, socket: Path) -> None:
        """Drop pooled connections to a sandbox that went away."""
        for up in self._pools.pop(socket, []):
            up.writer.close()

    async def _resolve(self, head: Head) -> Target:
        for resolver in self.resolvers:
            target = await resolver(head)
            if target is not None:
                return target
        raise GatewayError(401, "UNAUTHORIZED", "missing sandbox token: send Authorization: Bearer <auth_token>")

    async def _acquire(self, target: Target, has_body: bool) -> Upstream:
        if target.port is not None:
            return await self._tunnel_to(target)
        socket = target.socket
        pool = self._pools.get(socket)
        now = time.monotonic()
        while pool:
            up = pool.pop()
            if up.reader.at_eof() or up.writer.is_closing() or (has_body and now - up.idle_since > IDLE_REUSE):
                up.writer.close()
                continue
            up.reused = True
            return up
        try:
            reader, writer = await asyncio.open_unix_connection(str(socket), limit=HEAD_LIMIT)
        except OSError as exc:
            raise GatewayError(502, "AGENT_UNAVAILABLE", f"sandbox agent is not reachable: {exc.strerror or exc}")
        return Upstream(reader, writer)

    async def _tunnel_to(self, target: Target) -> Upstream:
        """A fresh pipe to the sandbox's port, per request: the app may close it whenever it likes, and a
        pooled one could outlive the app that answered on it."""
        try:
            reader, writer = await asyncio.open_unix_connection(str(target.socket), limit=HEAD_LIMIT)
        except OSError as exc:
            raise GatewayError(502, "AGENT_UNAVAILABLE", f"sandbox agent is not reachable: {exc.strerror or exc}")
        try:
            writer.write(f"CONNECT 127.0.0.1:{target.port} HTTP/1.1\r\nHost: 127.0.0.1:{target.port}\r\n\r\n".encode())
            head = parse_head(await reader.readuntil(b"\r\n\r\n"), request=False)
            if head.target != "200":
                kind, n = body_framing(head)
                body = await reader.readexactly(n) if kind == "length" and n < HEAD_LIMIT else b""
                try:
                    message = json.loads(body)["message"]
                except (ValueError, KeyError, TypeError):
                    message = f"The sandbox port is not open: {target.port}"
                raise GatewayError(502, "PORT_NOT_OPEN", message, {"port": target.port})
        except GatewayError:
            writer.close()
            raise
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            writer.close()
            raise GatewayError(502, "AGENT_UNAVAILABLE", f"sandbox agent failed: {exc}") from None
        return Upstream(reader, writer)

    def _release(self, target: Target, up: Upstream) -> None:
        if target.port is not None:
            up.writer.close()
            return
        socket = target.socket
        up.idle_since = time.monotonic()
        up.reused = False
        pool = self._pools.setdefault(socket, [])
        if len(pool) < 16:
            pool.append(up)
        else:
            up.writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._conns.add(task)
        try:
            while True:
                try:
                    raw = await read_head(reader)
                    if raw is None:
                        return
                    head = parse_head(raw, request=True)
                    target = await self._resolve(head)
                except GatewayError as exc:
                    writer.write(error_bytes(exc.status, exc.code, exc.message, exc.details, close=exc.status >= 500))
                    await writer.drain()
                    if exc.status in (400, 431):
                        return
                    # Skip the refused request's body so the connection stays usable.
                    if not await self._discard_body(reader, raw):
                        return
                    continue
                keep = await self._forward(head, target, reader, writer)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("gateway connection failed")
        finally:
            self._conns.discard(task)
            writer.close()

    async def _discard_body(self, reader, raw: bytes | None) -> bool:
        if raw is None:
            return False
        try:
            head = parse_head(raw, request=True)
            kind, n = body_framing(head)
        except GatewayError:
            return False
        if kind == "chunked":
            return False  # simpler to close than to parse a body we refused
        if n:
            if n > 1024 * 1024:
                return False
            await reader.readexactly(n)
        return True

    async def _forward(self, head: Head, target: Target, creader, cwriter, retried: bool = False) -> bool:
        kind, n = body_framing(head)
        has_body = kind == "chunked" or n > 0
        if not retried:
            self._forwarded(head)
        try:
            up = await self._acquire(target, has_body)
        except GatewayError as exc:
            cwriter.write(error_bytes(exc.status, exc.code, exc.message))
            await cwriter.drain()
            return False
        up.writer.write(head.raw)
        # Pump the request body while the response is read: handles Expect: 100-continue and early answers.
        pump = asyncio.create_task(copy_body(kind, n, creader, up.writer)) if has_body else None
        try:
            rhead = await self._response_head(up, cwriter)
        except (ConnectionError, asyncio.IncompleteReadError, GatewayError) as exc:
            if pump:
                pump.cancel()
            up.writer.close()
            if up.reused and not has_body and not retried:  # a pooled connection the agent had closed
                return await self._forward(head, target, creader, cwriter, retried=True)
            cwriter.write(error_bytes(502, "AGENT_UNAVAILABLE", f"sandbox agent failed: {exc}", close=True))
            await cwriter.drain()
            return False
        status = int(rhead.target)
        cwriter.write(rhead.raw)
        if status == 101:
            await self._tunnel(creader, cwriter, up, pump)
            return False
        if head.method == "HEAD" or status in (204, 304):
            rkind, rn = "length", 0
        else:
            rkind, rn = body_framing(rhead)
            if rkind == "none":
                rkind = "eof"
        try:
            await copy_body(rkind, rn, up.reader, cwriter)
            if pump:
                await pump
        except BaseException:
            if pump:
                pump.cancel()
            up.writer.close()
            raise
        await cwriter.drain()
        if rkind == "eof" or wants_close(rhead):
            up.writer.close()
            return False
        self._release(target, up)
        return not wants_close(head)

    def _forwarded(self, head: Head) -> None:
        """Tell the agent the address clients use (it builds URLs from it, e.g. the VNC WebSocket URL)."""
        if self.public is not None and self.public.netloc:
            host, proto = self.public.netloc, self.public.scheme or "http"
        else:
            host = head.header("x-forwarded-host") or head.header("host") or ""
            proto = head.header("x-forwarded-proto") or "http"
        values = {"x-forwarded-proto": proto}
        if host:
            values["x-forwarded-host"] = host
        replace_headers(head, values)

    async def _response_head(self, up: Upstream, cwriter) -> Head:
        while True:
            raw = await up.reader.readuntil(b"\r\n\r\n")
            rhead = parse_head(raw, request=False)
            status = int(rhead.target)
            if 100 <= status < 200 and status != 101:
                cwriter.write(raw)  # interim (100 Continue): pass on, then wait for the real answer
                await cwriter.drain()
                continue
            return rhead

    async def _tunnel(self, creader, cwriter, up: Upstream, pump) -> None:
        if pump:
            pump.cancel()
        await cwriter.drain()
        a = asyncio.create_task(copy_until_eof(creader, up.writer))
        b = asyncio.create_task(copy_until_eof(up.reader, cwriter))
        try:
            await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (a, b):
                t.cancel()
            await asyncio.gather(a, b, return_exceptions=True)
            up.writer.close()
