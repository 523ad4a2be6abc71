"""A streaming HTTP/1.1 reverse proxy from one TCP port to many agents' unix sockets.

The sandbox is picked per request by a chain of resolvers (default: the sandbox JWT in
`Authorization: Bearer`; the E2B dialect adds one for the `E2b-Sandbox-Id` header), so a keep-alive
client connection may address different sandboxes request by request.

What reaches an agent is only what the gateway authorised, and each client reads only its own answers:

- client requests are parsed and framed by h11 with the extra strictness of gateway/framing.py (any
  ambiguity is a 400 and the connection closes); the agent gets a request the gateway wrote from the
  parsed values and a body it framed itself, never the client's bytes, so a request hidden in a header
  or a body (smuggling) cannot reach the agent as a request of its own;
- agents' answers are parsed by h11 as well (gateway/upstream.py) and written on through the client's h11
  connection; an answer to HEAD carries no body, the gateway's own error answers included;
- an upstream connection belongs to the client connection that opened it (one per sandbox it talks to)
  and dies with it: it is never pooled across clients, so even a desynchronised agent connection could
  only ever answer the client that caused it; and it is used again only after an exchange h11 saw
  complete on both sides. Any framing error or unfinished exchange closes it.

Bodies are piped chunk by chunk with backpressure, never buffered whole, while the answer is read (an
agent may answer early); `Expect: 100-continue` is answered by the gateway when it starts reading the
body. A 101 answer (WebSocket) turns the connection into a raw two-way pipe. Requests for a sandbox's
own port go through a fresh CONNECT tunnel per request. Slow or idle clients are bounded by
gateway/limits.py.

An answer that breaks once begun (the sandbox was killed mid-stream) cannot be finished or replaced: the
client connection is reset (`abort`), after what was relayed has left, as an HTTP/2 proxy resets the
stream. A plain close would end a chunked body at a point that reads as a framing error of ours, and clients
(E2B's SDK among them) treat only a reset as the connection lost, then ask whether the sandbox still lives.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import struct
import termios
import time
from pathlib import Path
from typing import Awaitable, Callable
from urllib.parse import urlsplit

import h11

from sandboxd.gateway import cors
from sandboxd.gateway.errors import GatewayError, error_bytes
from sandboxd.gateway.framing import CLOSED, HEAD_LIMIT, SMALL_BODY, RequestFramer, parse_head, upstream_request
from sandboxd.gateway.heads import Head, replace_headers
from sandboxd.gateway.limits import Limits
from sandboxd.gateway.observe import OTHER, Observe, route_label
from sandboxd.gateway.upstream import CHUNK, Upstream, UpstreamFailed

__all__ = ["Gateway", "GatewayError", "Head", "Target", "Resolver", "error_bytes", "parse_head"]

log = logging.getLogger(__name__)

IDLE_REUSE = 4.0  # seconds: an upstream connection idle longer is not reused for a request with a body
PINNED = 4  # upstream connections one client connection keeps (to as many sandboxes)
ABORT_FLUSH = 0.2  # seconds a reset waits for what was relayed to leave
LINGER = 1.0  # seconds a closing connection's unread input is drained, so the last answer is not reset away
DROPPED_HEADERS = (b"connection", b"keep-alive")  # the agent's own connection management stays upstream


class Target:
    __slots__ = ("socket", "sandbox_id", "port")

    def __init__(self, socket: Path, sandbox_id: str, port: int | None = None):
        self.socket, self.sandbox_id = socket, sandbox_id
        self.port = port  # a port a process in the sandbox listens on (through the agent's CONNECT)


Resolver = Callable[[Head], Awaitable[Target | None]]


class ClientConn:
    """One client connection: its request framer and the agent connections pinned to it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: Limits):
        self.reader, self.writer = reader, writer
        self.framer = RequestFramer(limits.max_body)
        self.upstreams: dict[Path, Upstream] = {}
        self.started = False  # the current request's answer has begun (an error can no longer replace it)
        self.cross_origin = False  # the current request named its Origin (a browser's cross-origin call)
        self.status = 0  # the current request's answer status and when its head went out (for metrics)
        self.answered = 0.0

    def answer(self, status: int) -> None:
        self.status, self.answered = status, time.perf_counter()

    def take(self, socket: Path) -> Upstream | None:
        return self.upstreams.pop(socket, None)

    def keep(self, up: Upstream) -> None:
        self.upstreams[up.socket] = up
        while len(self.upstreams) > PINNED:
            self.upstreams.pop(next(iter(self.upstreams))).close()

    def drop(self, socket: Path) -> None:
        up = self.upstreams.pop(socket, None)
        if up is not None:
            up.close()

    def close_upstreams(self) -> None:
        for up in self.upstreams.values():
            up.close()
        self.upstreams.clear()

    async def read(self) -> bytes:
        try:
            return await self.reader.read(CHUNK)
        except (ConnectionError, OSError):
            return b""


class Gateway:
    def __init__(self, resolvers: list[Resolver] | None = None, public_host: str | None = None,
                 limits: Limits | None = None, observe: Observe | None = None):
        # E2B (and later routing schemes) insert their resolver at the front of this list.
        self.resolvers: list[Resolver] = list(resolvers or [])
        # The configured public URL (settings.public_host), authoritative for X-Forwarded-Host/-Proto;
        # without one, what the client (or a proxy in front of us) sent is forwarded.
        self.public = urlsplit(public_host) if public_host else None
        self.limits = limits or Limits()
        self.observe = observe  # counts each answered request (gateway/observe.py)
        self._server: asyncio.base_events.Server | None = None
        self._conns: dict[asyncio.Task, ClientConn | None] = {}

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._client, host, port, limit=HEAD_LIMIT, reuse_address=True)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the gateway has not been started")
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server:
            self._server.close()
        for t in list(self._conns):
            t.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)

    def forget(self, socket: Path) -> None:
        """Close the connections to a sandbox that went away."""
        for conn in self._conns.values():
            if conn is not None:
                conn.drop(socket)

    async def _resolve(self, head: Head) -> Target:
        for resolver in self.resolvers:
            target = await resolver(head)
            if target is not None:
                return target
        raise GatewayError(401, "UNAUTHORIZED", "missing sandbox token: send Authorization: Bearer <auth_token>")

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # start_server runs each client in a task of its own
        peer = writer.get_extra_info("peername")
        addr = peer[0] if isinstance(peer, tuple) and peer else "?"
        refusal = self.limits.admit(addr)
        if refusal is not None:
            self._conns[task] = None
            try:
                writer.write(refusal)
                await linger_close(reader, writer)
            finally:
                self._conns.pop(task, None)
            return
        conn = ClientConn(reader, writer, self.limits)
        self._conns[task] = conn
        linger = False
        try:
            first = True
            while True:
                try:
                    head = await self._read_head(conn, first)
                except GatewayError as exc:
                    writer.write(error_bytes(exc.status, exc.code, exc.message, exc.details, close=True, shape=exc.body))
                    linger = True
                    return
                if head is None:
                    return
                first = False
                start, conn.status = time.perf_counter(), 0
                if head.method == "OPTIONS" and cors.is_preflight(head):
                    # Before any resolver: a preflight carries no token, and no sandbox needs to see it.
                    keep = await self._preflight(conn)
                    self._count(conn, head, None, start)
                    if not keep:
                        linger = True
                        return
                    continue
                conn.cross_origin = "origin" in head.headers
                try:
                    target = await self._resolve(head)
                except GatewayError as exc:
                    keep = await self._refuse(conn, exc)
                    self._count(conn, head, None, start)
                    linger = not keep
                    if not keep:
                        return
                    continue
                keep = await self._forward(conn, head, target)
                self._count(conn, head, target, start)
                if not keep:
                    linger = True
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("gateway connection failed")
        finally:
            conn.close_upstreams()
            self._conns.pop(task, None)
            self.limits.release(addr)
            if linger and not writer.is_closing():
                with contextlib.suppress(Exception):
                    await linger_close(reader, writer)
            writer.close()

    def _count(self, conn: ClientConn, head: Head, target: Target | None, start: float) -> None:
        if self.observe is not None and conn.status:
            route = route_label(head.target, target.port) if target is not None else OTHER
            self.observe(route, head.method, conn.status, conn.answered - start)

    async def _read_head(self, conn: ClientConn, first: bool) -> Head | None:
        """The next request's head: a kept-alive connection may idle `keep_alive` seconds before its next
        request begins, and from the moment the gateway waits, the whole head must arrive within
        `head_timeout` (else the connection closes: 408 if a head had begun)."""
        framer, limits = conn.framer, self.limits
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.head_timeout
        idle_until = None if first else loop.time() + limits.keep_alive
        while True:
            ev = framer.next_event()
            if isinstance(ev, Head):
                return ev
            if ev is CLOSED:
                return None
            begun = framer.pending
            until = deadline if begun or idle_until is None else min(deadline, idle_until)
            try:
                async with asyncio.timeout_at(until):
                    data = await conn.read()
            except TimeoutError:
                if begun:
                    raise GatewayError(408, "REQUEST_TIMEOUT",
                                       f"the request head did not arrive within {limits.head_timeout:g} s") from None
                return None
            framer.feed(data)

    async def _refuse(self, conn: ClientConn, exc: GatewayError) -> bool:
        """Answer a request the gateway will not forward; keep the connection when its body is small enough
        to read and drop within the head deadline."""
        framer = conn.framer
        keep = exc.status < 500 and framer.length is not None and framer.length <= SMALL_BODY
        if keep:
            try:
                async with asyncio.timeout(self.limits.head_timeout):
                    while not isinstance(ev := framer.next_event(), h11.EndOfMessage):
                        if ev is h11.NEED_DATA:
                            framer.feed(await conn.read())
            except (TimeoutError, GatewayError):
                keep = False
        conn.writer.write(framer.error_answer(exc, close=not keep))
        conn.answer(exc.status)
        await conn.writer.drain()
        if keep and framer.reusable():
            framer.next_cycle()
            return True
        return False

    async def _preflight(self, conn: ClientConn) -> bool:
        """Answer a CORS preflight (gateway/cors.py); one that carries a body is refused."""
        framer = conn.framer
        if framer.has_body:
            return await self._refuse(conn, GatewayError(400, "INVALID_REQUEST", "a CORS preflight carries no body"))
        if not isinstance(framer.next_event(), h11.EndOfMessage):
            return await self._fail(conn, None, GatewayError(400, "INVALID_REQUEST", "malformed request"))
        conn.writer.write(framer.respond(h11.Response(status_code=204, headers=cors.preflight_headers()))
                          + framer.respond(h11.EndOfMessage()))
        conn.answer(204)
        await conn.writer.drain()
        if framer.reusable():
            framer.next_cycle()
            return True
        return False

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

    async def _upstream(self, conn: ClientConn, target: Target, has_body: bool) -> Upstream:
        if target.port is not None:
            return await Upstream.tunnel_to(target.socket, target.port)
        up = conn.take(target.socket)
        if up is not None:
            if up.usable(has_body, IDLE_REUSE):
                up.reused = True
                return up
            up.close()
        return await Upstream.open(target.socket)

    async def _forward(self, conn: ClientConn, head: Head, target: Target) -> bool:
        """Forward one authorised request and relay its answer; whether the client connection stays open."""
        framer = conn.framer
        if not framer.has_body and not isinstance(framer.next_event(), h11.EndOfMessage):
            return await self._fail(conn, None, GatewayError(400, "INVALID_REQUEST", "malformed request"))
        self._forwarded(head)
        try:
            request = upstream_request(head, framer.length)
        except h11.LocalProtocolError as exc:
            return await self._fail(conn, None, GatewayError(400, "INVALID_REQUEST", f"malformed request: {exc}"))
        for attempt in (0, 1):
            conn.started = False
            try:
                up = await self._upstream(conn, target, framer.has_body)
            except GatewayError as exc:
                return await self._fail(conn, None, exc)
            try:
                up.send(request, end=not framer.has_body)
            except h11.LocalProtocolError as exc:
                return await self._fail(conn, up, GatewayError(400, "INVALID_REQUEST", f"malformed request: {exc}"))
            pump = asyncio.create_task(self._pump(conn, up)) if framer.has_body else None
            result, failure = await self._answer(conn, up, pump)
            broke = pump.exception() if pump is not None and pump.done() and not pump.cancelled() else None
            if broke is not None:
                return await self._fail(conn, up, broke)  # the client broke its request
            if failure is not None:
                # A kept connection the agent had closed meanwhile: nothing was answered, so ask again.
                if (attempt == 0 and up.reused and not framer.has_body and up.received == 0
                        and isinstance(failure, UpstreamFailed)):
                    up.close()
                    continue
                return await self._fail(conn, up, failure)
            break
        if result == "switched":
            if pump is not None and not pump.done():
                pump.cancel()
                up.close()
                return False
            await self._tunnel(conn, up)
            return False
        if pump is not None and not pump.done():
            pump.cancel()  # answered before the whole request arrived: neither side can go on
            await asyncio.gather(pump, return_exceptions=True)
            up.close()
            return False
        if up.reusable():
            up.next_cycle()
            conn.keep(up)
        else:
            up.close()
        if framer.reusable():
            framer.next_cycle()
            return True
        return False

    async def _answer(self, conn: ClientConn, up: Upstream, pump: asyncio.Task | None):
        """Relay the agent's answer while the body is pumped: (result, failure). Ends when the answer is
        relayed or broke, or when the client broke its request (an early answer ends it too)."""
        if pump is None:  # the common case, without a task of its own
            try:
                return await self._relay(conn, up), None
            except (UpstreamFailed, GatewayError) as exc:
                return None, exc
            except BaseException:
                up.close()
                raise
        relay = asyncio.create_task(self._relay(conn, up))
        try:
            waiting = {relay, pump}
            while not relay.done() and not (pump.done() and pump.exception()):
                _, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            pump.cancel()
            relay.cancel()
            up.close()
            raise
        if not relay.done():
            relay.cancel()
            await asyncio.gather(relay, return_exceptions=True)
            return None, None
        failure = relay.exception()
        if failure is not None:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            if not isinstance(failure, (UpstreamFailed, GatewayError)):
                up.close()
                raise failure
            return None, failure
        return relay.result(), None

    async def _fail(self, conn: ClientConn, up: Upstream | None, exc: BaseException) -> bool:
        """End an exchange that broke: the agent connection is closed, the client gets an error answer if
        its answer had not begun, and its connection closes."""
        if up is not None:
            up.close()
        if not conn.started:
            if not isinstance(exc, GatewayError):
                exc = GatewayError(502, "AGENT_UNAVAILABLE", f"sandbox agent failed: {exc}")
            try:
                conn.writer.write(conn.framer.error_answer(exc, close=True))
                conn.answer(exc.status)
            except h11.LocalProtocolError:
                pass  # h11 cannot answer in this state: closing is the answer
            with contextlib.suppress(ConnectionError):
                await conn.writer.drain()
        else:
            await abort(conn.writer)
        return False

    async def _pump(self, conn: ClientConn, up: Upstream) -> None:
        """The client's request body to the agent, as the framer decodes it, re-framed by the agent's h11
        connection. Stops quietly if the agent stops reading (its answer is still relayed)."""
        framer = conn.framer
        if framer.waiting_for_continue():
            conn.writer.write(framer.respond(h11.InformationalResponse(status_code=100, headers=[])))
            await conn.writer.drain()
        while True:
            ev = framer.next_event()
            if ev is h11.NEED_DATA:
                data = await conn.read()
                framer.feed(data)
                continue
            try:
                if isinstance(ev, h11.Data):
                    up.send(h11.Data(data=ev.data))
                    await up.drain()
                elif isinstance(ev, h11.EndOfMessage):
                    up.send(h11.EndOfMessage())
                    await up.drain()
                    return
            except (ConnectionError, h11.LocalProtocolError):
                return

    async def _relay(self, conn: ClientConn, up: Upstream) -> str:
        """The agent's answer to the client: "done", or "switched" after a 101. What h11 yields from one
        read goes out in one write (then the gateway waits for the client to take it: backpressure)."""
        framer, writer = conn.framer, conn.writer
        out = bytearray()

        async def flush() -> None:
            if out:
                writer.write(bytes(out))
                out.clear()
                await writer.drain()

        while True:
            ev = await up.next_event(flush)
            try:
                if isinstance(ev, h11.InformationalResponse):
                    if ev.status_code != 101:
                        continue  # the gateway answers Expect itself; other interim answers stay upstream
                    out += framer.respond(h11.InformationalResponse(status_code=101, headers=ev.headers.raw_items(),
                                                                    reason=ev.reason))
                    conn.started = True
                    conn.answer(101)
                    await flush()
                    return "switched"
                if isinstance(ev, h11.Response):
                    names = {n for n, _ in ev.headers}
                    if b"transfer-encoding" in names and b"content-length" in names:
                        raise UpstreamFailed("an answer with both Transfer-Encoding and Content-Length")
                    headers = [(n, v) for n, v in ev.headers.raw_items() if n.lower() not in DROPPED_HEADERS]
                    if conn.cross_origin:
                        headers = cors.answer_headers(headers)
                    out += framer.respond(h11.Response(status_code=ev.status_code, headers=headers, reason=ev.reason))
                    conn.started = True
                    conn.answer(ev.status_code)
                elif isinstance(ev, h11.Data):
                    out += framer.respond(h11.Data(data=ev.data))
                elif isinstance(ev, h11.EndOfMessage):
                    out += framer.respond(h11.EndOfMessage())
                    await flush()
                    return "done"
                else:
                    raise UpstreamFailed("the agent closed the connection before answering")
            except h11.LocalProtocolError as exc:
                raise UpstreamFailed(f"answer not fit to forward: {exc}") from None

    async def _tunnel(self, conn: ClientConn, up: Upstream) -> None:
        """After a 101: bytes both ways, starting with what each side sent past the switch."""
        cwriter = conn.writer
        early_client, early_agent = conn.framer.leftover(), up.leftover()
        if early_agent:
            cwriter.write(early_agent)
        if early_client:
            up.writer.write(early_client)

        async def pipe(read, writer) -> None:
            while data := await read():
                writer.write(data)
                await writer.drain()

        async def from_agent() -> bytes:
            try:
                return await up.reader.read(CHUNK)
            except (ConnectionError, OSError):
                return b""

        a = asyncio.create_task(pipe(conn.read, up.writer))
        b = asyncio.create_task(pipe(from_agent, cwriter))
        try:
            await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (a, b):
                t.cancel()
            await asyncio.gather(a, b, return_exceptions=True)
            up.close()


async def abort(writer: asyncio.StreamWriter) -> None:
    """Reset the connection once what was written has left (bounded wait): a reset drops a send queue."""
    sock = writer.get_extra_info("socket")
    try:
        await writer.drain()
        deadline = time.monotonic() + ABORT_FLUSH
        while sock is not None and _unsent(sock) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
    except (ConnectionError, OSError):
        pass
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _unsent(sock) -> int:
    """Bytes in the socket's send queue (SIOCOUTQ), 0 when it cannot say."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except OSError:
        return 0


async def linger_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send what is buffered, stop writing, and read (and drop) what the client still sends for a moment:
    closing at once would answer its unread bytes with a reset, which discards our last answer unread."""
    try:
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(LINGER):
            while await reader.read(CHUNK):
                pass
    except (TimeoutError, ConnectionError, OSError):
        pass
    finally:
        writer.close()
