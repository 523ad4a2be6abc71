"""The name a redirected connection is going to, from the first bytes its client sends.

A TLS client names its server in the ClientHello (SNI), an HTTP/1.x client in the Host header. The proxy reads
those bytes before it decides, and replays every byte it read to the destination once it admits the connection,
so the client and the server never see that anyone looked.

The parsing is done by libraries the rest of the host already trusts with hostile input, not by a hand-written
parser: Python's ssl module (OpenSSL) reads the ClientHello and h11 the request head. For TLS the records are
fed to a server-side SSLObject over memory BIOs whose SNI callback keeps the name and aborts the handshake with
an alert; no certificate is needed for that (OpenSSL calls the callback while it parses the hello extensions,
before it looks for one), and what the SSLObject writes (the alert) is thrown away, never sent to the client.
The record framing (5-byte headers, a ClientHello split over several records) is read here only to know when
the whole hello has arrived. Measured: 65-90 µs of CPU to parse a 517-byte ClientHello (one shared context).

Whatever the client sends, sniff returns: nothing within `wait` (a server-first protocol such as SSH or SMTP),
EOF, bytes that are neither TLS nor HTTP, or a hello or head that does not parse all give kind None or name None,
and the proxy decides by address alone.
"""
from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import sys
import time
from dataclasses import dataclass
from typing import Any, Literal

import h11

HEAD_LIMIT = 16 * 1024  # an HTTP request head, and the handshake bytes of a ClientHello
MAX_RECORDS = 64  # TLS records a ClientHello may be split into (some clients fragment it on purpose)
REST_WAIT = 5.0  # seconds for the rest of a hello or head once its first bytes came
CHUNK = 64 * 1024
METHODS = (b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
           b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK", b"REPORT", b"SEARCH")
_METHOD_PREFIXES = tuple(m + b" " for m in METHODS)
_LONGEST = max(len(m) for m in _METHOD_PREFIXES)

Kind = Literal["tls", "http"]


@dataclass(frozen=True)
class Sniffed:
    data: bytes  # everything read from the client, to be sent on first
    kind: Kind | None
    name: str | None


def host_name(value: bytes) -> str | None:
    """The name in a Host header value: port stripped, lowercase; None for an empty or non-ASCII one."""
    try:
        host = value.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return None
    if host.startswith("["):  # an IPv6 literal, [addr]:port
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host, _, port = host.partition(":")
        if port and not port.isdigit():
            return None
    return host or None


async def sniff(reader: asyncio.StreamReader, wait: float, rest: float = REST_WAIT) -> Sniffed:
    """Read the start of what the client sends and find the name it is going to. Never raises on what the
    client sends (a reset is treated as EOF)."""
    buf = bytearray()
    try:
        if not await _more(reader, buf, time.monotonic() + wait):
            return Sniffed(bytes(buf), None, None)
        deadline = time.monotonic() + rest
        if buf[0] == 0x16:
            name = await _tls_name(reader, buf, deadline)
            return Sniffed(bytes(buf), "tls", name)
        while len(buf) < _LONGEST and any(p.startswith(bytes(buf)) for p in _METHOD_PREFIXES):
            if not await _more(reader, buf, deadline):
                break
        if bytes(buf).startswith(_METHOD_PREFIXES):
            name = await _http_name(reader, buf, deadline)  # before the data: it reads more
            return Sniffed(bytes(buf), "http", name)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    return Sniffed(bytes(buf), None, None)


async def _more(reader: asyncio.StreamReader, buf: bytearray, deadline: float) -> bool:
    """Append what the client sends next; False at EOF or past the deadline."""
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    try:
        chunk = await asyncio.wait_for(reader.read(CHUNK), left)
    except asyncio.TimeoutError:
        return False
    buf += chunk
    return bool(chunk)


# -- TLS -------------------------------------------------------------------------------------------------
async def _tls_name(reader: asyncio.StreamReader, buf: bytearray, deadline: float) -> str | None:
    """Read whole records until they hold the whole ClientHello, then have OpenSSL read its SNI."""
    pos, hello, records = 0, bytearray(), 0
    while True:
        while len(buf) < pos + 5:
            if not await _more(reader, buf, deadline):
                return None
        kind, major, length = buf[pos], buf[pos + 1], int.from_bytes(buf[pos + 3:pos + 5], "big")
        if kind != 0x16 or major != 3 or not 0 < length <= 16384:
            return None
        while len(buf) < pos + 5 + length:
            if not await _more(reader, buf, deadline):
                return None
        hello += buf[pos + 5:pos + 5 + length]
        pos, records = pos + 5 + length, records + 1
        if len(hello) >= 4:
            if hello[0] != 1:  # not a ClientHello
                return None
            need = 4 + int.from_bytes(hello[1:4], "big")
            if need > HEAD_LIMIT:
                return None
            if len(hello) >= need:
                return server_name(bytes(buf[:pos]))
        if records >= MAX_RECORDS:
            return None


class _NoName:
    pass


_UNSET = _NoName()


def _keep_name(obj: Any, name: str | None, ctx: ssl.SSLContext) -> int:
    obj.sniffed_name = name
    return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME  # ends the handshake here


def _context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # It never completes a handshake, so old versions do no harm and their hellos still show their SNI.
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.sni_callback = _keep_name
    return ctx


_CONTEXT = _context()


def server_name(records: bytes) -> str | None:
    """The SNI of the ClientHello in these TLS records, None when it has none or they do not parse."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = _CONTEXT.wrap_bio(incoming, outgoing, server_side=True)
    incoming.write(records)
    incoming.write_eof()
    # A name that is not ASCII makes CPython report a UnicodeDecodeError through sys.unraisablehook (and the
    # handshake fail); a client could fill the host's log with them, so they are dropped here, anything else
    # passed on. Nothing awaits in between, so no other coroutine of this loop runs under the swapped hook.
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, UnicodeDecodeError):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        with contextlib.suppress(ssl.SSLError, ValueError):
            obj.do_handshake()
    finally:
        sys.unraisablehook = previous
    name = getattr(obj, "sniffed_name", _UNSET)
    return name.lower() if isinstance(name, str) and name else None


# -- HTTP ------------------------------------------------------------------------------------------------
async def _http_name(reader: asyncio.StreamReader, buf: bytearray, deadline: float) -> str | None:
    """Read the request head (up to HEAD_LIMIT) and have h11 parse it; the name in its Host header."""
    while b"\r\n\r\n" not in buf:
        if len(buf) > HEAD_LIMIT or not await _more(reader, buf, deadline):
            return None
    end = buf.index(b"\r\n\r\n") + 4
    if end > HEAD_LIMIT:
        return None
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT)
    try:
        conn.receive_data(bytes(buf[:end]))
        event = conn.next_event()
    except h11.ProtocolError:
        return None
    return request_name(event) if isinstance(event, h11.Request) else None


_ABSOLUTE = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)")


def request_name(req: h11.Request) -> str | None:
    """The name a request is for: its Host header's; None without exactly one Host, or when the target is in
    absolute form (or CONNECT's authority form) for another host (a server routes by the target then)."""
    hosts = [v for k, v in req.headers if k == b"host"]
    if len(hosts) != 1:
        return None
    name = host_name(hosts[0])
    if req.method == b"CONNECT":
        authority: bytes | None = req.target
    elif req.target.startswith(b"/") or req.target == b"*":
        return name
    else:
        m = _ABSOLUTE.match(req.target)
        authority = m.group(1) if m else None
    if authority is None or host_name(authority.rpartition(b"@")[2]) != name:
        return None
    return name
