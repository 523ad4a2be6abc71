"""Setting a rule's headers on the plain-HTTP requests of one connection (E2B's `rules: {host: [{transform:
{headers: ...}}]}`), typically a credential the sandbox's code never sees.

Only the client→server direction is touched: h11 (server role) parses the client's stream request by request,
keep-alive and pipelining included, and each request is written upstream again from the parsed values with the
rule's headers set (a same-named header of the client's replaced, case-insensitively). The body is framed anew
as h11 read it (Content-Length, or chunked with its trailers), so the server cannot be shown a request framed
otherwise than the one that was checked. Answers go back as raw bytes: the server's framing is its own business,
and h11 is told of a dummy answer only to move on to the next request.

Every request is checked by its own name (sniff.request_name: its Host, or none when an absolute-form target
names another host, since a server routes by the target then and the rule's headers must not go there): one for
another name than the connection's is decided again, and a refusal ends the forwarding (the proxy answers 403
after the answers already under way).
An upgrade (CONNECT, or an Upgrade header) ends the parsing: what follows is relayed as raw bytes.
"""
from __future__ import annotations

import asyncio
import re
from typing import Awaitable, Callable

import h11

from sandboxd.runtime.egressproxy.rules import Verdict
from sandboxd.runtime.egressproxy.sniff import CHUNK, HEAD_LIMIT, request_name

Headers = tuple[tuple[str, str], ...]
# framing and routing stay the client's (as h11 read them): a rule cannot set them
NOT_SETTABLE = frozenset({"content-length", "transfer-encoding", "host", "connection", "upgrade"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


def settable(headers: Headers) -> list[tuple[bytes, bytes]]:
    """The rule's headers that may be written (a valid name and value, not one of NOT_SETTABLE)."""
    out = []
    for name, value in headers:
        if name.lower() in NOT_SETTABLE or not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
            continue
        try:
            out.append((name.encode("ascii"), value.encode("latin-1")))
        except UnicodeEncodeError:
            continue
    return out


def request_head(req: h11.Request, extra: list[tuple[bytes, bytes]]) -> tuple[bytes, bool]:
    """The request head to send upstream with extra headers set; whether its body is chunked."""
    replaced = {name.lower() for name, _ in extra}
    lines = [b"%s %s HTTP/%s\r\n" % (req.method, req.target, req.http_version)]
    chunked, length = False, None
    for name, value in req.headers.raw_items():
        low = name.lower()
        if low == b"transfer-encoding":  # h11 admits only `chunked`
            chunked = True
        elif low == b"content-length":  # h11 admits one value only
            length = value
        elif low not in replaced:
            lines.append(b"%s: %s\r\n" % (name, value))
    lines += [b"%s: %s\r\n" % (name, value) for name, value in extra]
    if chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    elif length is not None:
        lines.append(b"Content-Length: %s\r\n" % length)
    return b"".join(lines) + b"\r\n", chunked


async def forward(first: bytes, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter, name: str | None,
                  check: Callable[[str | None], Awaitable[Verdict]], headers_for: Callable[[str | None], Headers],
                  sent: Callable[[int], None]) -> Verdict | None:
    """Forward the client's requests (first: what was read already) upstream with their headers set, until the
    client's EOF (passed on as ours) or a request another name refused (its Verdict returned, nothing of it sent).
    name: the connection's admitted name. Raises h11.ProtocolError on a request h11 refuses."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT)
    conn.receive_data(first)
    chunked = False

    async def send(data: bytes) -> None:
        upstream.write(data)
        sent(len(data))
        await upstream.drain()

    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(CHUNK))
        elif isinstance(event, h11.Request):
            host = request_name(event)
            if host != name:
                verdict = await check(host)
                if not verdict.allow:
                    return verdict
                name = host
            head, chunked = request_head(event, settable(headers_for(name)))
            await send(head)
        elif isinstance(event, h11.Data):
            if event.data:
                await send(b"%x\r\n%s\r\n" % (len(event.data), event.data) if chunked else event.data)
        elif isinstance(event, h11.EndOfMessage):
            if chunked:
                await send(b"0\r\n" + b"".join(b"%s: %s\r\n" % (k, v) for k, v in event.headers.raw_items())
                           + b"\r\n")
            if conn.their_state is h11.MIGHT_SWITCH_PROTOCOL:
                await _raw(conn, reader, upstream, send)
                return None
            conn.send(h11.Response(status_code=204, headers=[]))  # the dummy answer: h11 moves on
            conn.send(h11.EndOfMessage())
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                # the client asked to close (or spoke HTTP/1.0): nothing more it sends is a request
                await _discard(reader, upstream)
                return None
            conn.start_next_cycle()
        elif isinstance(event, h11.ConnectionClosed):
            upstream.write_eof()
            return None
        else:  # PAUSED cannot come: every pause is handled at its EndOfMessage
            raise h11.RemoteProtocolError(f"unexpected {event!r}")


async def _raw(conn: h11.Connection, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter,
               send: Callable[[bytes], Awaitable[None]]) -> None:
    data, closed = conn.trailing_data
    if data:
        await send(data)
    while not closed and (chunk := await reader.read(CHUNK)):
        await send(chunk)
    upstream.write_eof()


async def _discard(reader: asyncio.StreamReader, upstream: asyncio.StreamWriter) -> None:
    while await reader.read(CHUNK):
        pass
    upstream.write_eof()
