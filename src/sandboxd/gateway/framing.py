"""Strict framing of the requests clients send the gateway, and the requests it writes to agents.

Where a request ends must be decided once, by one parser, and every hop after it must agree. The gateway
used to split heads itself, frame bodies by its own reading of them and forward the client's raw bytes to
the agent, whose h11 read those bytes differently (a bare LF ends a line for h11; Transfer-Encoding beats
Content-Length): one request to the gateway became two to the agent. So:

- h11 parses every client request (head and body framing), one h11 connection per request so that what
  follows a request (a pipelined one) is checked again from its first byte, never fed on trusted;
- before h11 sees a head, it is refused (400, connection closed) for what h11 tolerates but a proxy must
  not: a bare LF or CR, an obs-fold continuation line, Content-Length together with Transfer-Encoding,
  Content-Length twice or as a list, and a second copy of any header routing or framing reads (Host,
  Authorization, the E2B and sandbox ids and tokens); h11 itself refuses a non-numeric or negative
  Content-Length and any Transfer-Encoding but `chunked`;
- nothing the client sent is forwarded as bytes: `upstream_request` builds the agent's request from the
  parsed values (h11 writes it, validating every header again) with framing headers of its own, and the
  body travels as decoded data the agent-side h11 connection frames anew. The agent therefore receives
  exactly one request per request the gateway authorised, whatever the client's bytes were.
"""
from __future__ import annotations

import re

import h11

from sandboxd.gateway import cors
from sandboxd.gateway.errors import REASONS, GatewayError, error_parts
from sandboxd.gateway.heads import Head

HEAD_LIMIT = 64 * 1024
SMALL_BODY = 64 * 1024  # a refused request's body up to this is read and dropped to keep the connection

_BARE_LF = re.compile(rb"(?<!\r)\n")
_BARE_CR = re.compile(rb"\r(?!\n)")
_FOLD = re.compile(rb"\r\n[ \t]")
# Headers the gateway or the agent act on: a second copy would let the two read different values.
SINGLE = frozenset({b"content-length", b"transfer-encoding", b"host", b"authorization", b"x-access-token",
                    b"e2b-traffic-access-token", b"e2b-sandbox-id", b"e2b-sandbox-port", b"x-sandbox-id",
                    b"upgrade", b"expect"})
# Not forwarded: the gateway frames the body itself and answers `Expect: 100-continue` itself.
NOT_FORWARDED = frozenset({"content-length", "transfer-encoding", "expect"})
CLOSED = h11.ConnectionClosed()


def bad(message: str) -> GatewayError:
    return GatewayError(400, "INVALID_REQUEST", message)


def check_head_bytes(data: bytes | bytearray, complete: bool, pos: int = 0, endpos: int | None = None) -> None:
    """Refuse line endings and folds h11 would accept, in data[pos:endpos] (lookbehind sees before pos);
    an incomplete head may end in a CR whose LF is still to come."""
    endpos = len(data) if endpos is None else endpos
    if _BARE_LF.search(data, pos, endpos):
        raise bad("a header line ends in a bare LF (lines end in CRLF)")
    cr = _BARE_CR.search(data, pos, endpos)
    if cr and (complete or cr.start() < endpos - 1):
        raise bad("a bare CR in the request head")
    if _FOLD.search(data, max(0, pos - 2), endpos):
        raise bad("a folded header line (obs-fold) is not accepted")


def check_fields(raw: bytes) -> None:
    seen: set[bytes] = set()
    for line in raw[:-4].split(b"\r\n")[1:]:
        name = line.split(b":", 1)[0].strip().lower()
        if name in SINGLE:
            if name in seen:
                raise bad(f"header {name.decode('latin-1')} given more than once")
            seen.add(name)
        if name == b"content-length" and b"," in line:
            raise bad("Content-Length must be one number")
    if b"content-length" in seen and b"transfer-encoding" in seen:
        raise bad("a request may not carry both Transfer-Encoding and Content-Length")


def _parse(raw: bytes, checked: bool = False) -> tuple[h11.Connection, h11.Request, Head]:
    if not checked:
        check_head_bytes(raw, complete=True)
    check_fields(raw)
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT)
    conn.receive_data(raw)
    try:
        ev = conn.next_event()
    except h11.RemoteProtocolError as exc:
        raise bad(f"malformed request head: {exc}") from None
    if not isinstance(ev, h11.Request):
        raise bad("malformed request head")
    target = ev.target.decode("latin-1")
    if not target.startswith("/") or ev.method == b"CONNECT":
        raise bad("the gateway takes origin-form request targets only (a path, no CONNECT, URL or *)")
    head = Head(ev.method.decode("latin-1"), target, "HTTP/" + ev.http_version.decode("latin-1"),
                [(n.decode("latin-1"), v.decode("latin-1")) for n, v in ev.headers.raw_items()])
    return conn, ev, head


def parse_head(raw: bytes, request: bool = True) -> Head:
    """A complete request head (ending in an empty line), strictly parsed; GatewayError(400) otherwise."""
    if not request:
        raise ValueError("parse_head parses request heads only (answers are read with h11)")
    return _parse(raw)[2]


class RequestFramer:
    """Sans-IO: the requests of one client connection, in order. `feed` what the client sent (b"" at EOF),
    then `next_event` gives a Head, then the body's h11.Data and h11.EndOfMessage (or h11.NEED_DATA, or
    CLOSED at a clean end between requests); a framing error raises GatewayError (400, 413 or 431) and
    the connection must close. Answers go out through `respond`; `next_cycle` starts the next request
    once both sides are done (h11 decides keep-alive)."""

    def __init__(self, max_body: int | None = None):
        self.max_body = max_body
        self.conn: h11.Connection | None = None
        self.head: Head | None = None
        self.length: int | None = 0  # body length; None: chunked
        self.received = 0
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already checked for bare CR/LF and folds
        self._eof = False

    @property
    def pending(self) -> bool:
        """Bytes of a next request have arrived (the keep-alive idle wait is over)."""
        return bool(self._buf) or self._eof

    @property
    def has_body(self) -> bool:
        return self.length is None or self.length > 0

    def feed(self, data: bytes) -> None:
        if self.conn is None:
            self._buf += data
            self._eof = self._eof or not data
        else:
            self.conn.receive_data(data)

    def next_event(self):
        if self.conn is None:
            return self._next_head()
        try:
            ev = self.conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise bad(f"malformed request body: {exc}") from None
        if isinstance(ev, h11.Data):
            self.received += len(ev.data)
            if self.max_body is not None and self.received > self.max_body:
                raise self._too_large()
        return ev

    def _next_head(self):
        buf = self._buf
        # Only what arrived since the last look is scanned (2 bytes back for a CRLF or fold cut in two):
        # a head sent a byte at a time costs no more than one sent whole.
        start = max(0, self._scanned - 3)
        end = buf.find(b"\r\n\r\n", start)
        complete = end >= 0
        stop = end + 4 if complete else min(len(buf), HEAD_LIMIT + 4)
        check_head_bytes(buf, complete, max(0, self._scanned - 2), stop)
        self._scanned = stop
        if not complete:
            if len(buf) > HEAD_LIMIT:
                raise GatewayError(431, "INVALID_REQUEST", f"request head larger than {HEAD_LIMIT} bytes")
            if self._eof:
                if buf.strip():
                    raise bad("connection closed inside a request head")
                return CLOSED
            return h11.NEED_DATA
        if end + 4 > HEAD_LIMIT:
            raise GatewayError(431, "INVALID_REQUEST", f"request head larger than {HEAD_LIMIT} bytes")
        scan = bytes(buf[:end + 4])
        self._scanned = 0
        rest = bytes(buf[end + 4:])
        buf.clear()
        conn, ev, head = _parse(scan, checked=True)
        names = {n.lower() for n, _ in ev.headers}
        if b"transfer-encoding" in names:
            self.length = None
        else:
            self.length = next((int(v) for n, v in ev.headers if n == b"content-length"), 0)
        self.received = 0
        if self.max_body is not None and self.length is not None and self.length > self.max_body:
            raise self._too_large()
        self.conn, self.head = conn, head
        if rest:
            conn.receive_data(rest)
        if self._eof:
            conn.receive_data(b"")
        return head

    def _too_large(self) -> GatewayError:
        return GatewayError(413, "INVALID_REQUEST", f"request body larger than {self.max_body} bytes",
                            {"max_bytes": self.max_body})

    def waiting_for_continue(self) -> bool:
        return self.conn is not None and self.conn.they_are_waiting_for_100_continue

    def respond(self, event) -> bytes:
        assert self.conn is not None  # answers follow a parsed head
        return self.conn.send(event) or b""

    def error_answer(self, exc: GatewayError, close: bool) -> bytes:
        """`exc` as a whole answer to the current request (headers only for HEAD, as h11 enforces)."""
        headers, body = error_parts(exc.status, exc.code, exc.message, exc.details, close, exc.body)
        assert self.head is not None  # answers follow a parsed head
        if "origin" in self.head.headers:  # so that a page can read why it was refused
            headers = cors.answer_headers(headers)
        out = self.respond(h11.Response(status_code=exc.status, headers=headers,
                                        reason=REASONS.get(exc.status, "Error").encode()))
        if self.head.method != "HEAD":
            out += self.respond(h11.Data(data=body))
        return out + self.respond(h11.EndOfMessage())

    def reusable(self) -> bool:
        return self.conn is not None and self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE

    def leftover(self) -> bytes:
        """What the client sent after the current request (for a protocol switch)."""
        return bytes(self.conn.trailing_data[0]) if self.conn is not None else bytes(self._buf)

    def next_cycle(self) -> None:
        assert self.conn is not None  # only a finished request starts the next one
        data, closed = self.conn.trailing_data
        self._buf = bytearray(data)
        self._scanned = 0
        self._eof = self._eof or closed
        self.conn, self.head, self.length, self.received = None, None, 0, 0


def upstream_request(head: Head, length: int | None) -> h11.Request:
    """The request the agent receives: the parsed head's values, with the gateway's own framing."""
    headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in head.fields if n.lower() not in NOT_FORWARDED]
    if head.header("host") is None:
        headers.insert(0, (b"Host", b"sandbox"))  # an HTTP/1.0 client's request goes on as HTTP/1.1
    if length is None:
        headers.append((b"Transfer-Encoding", b"chunked"))
    elif length or head.header("content-length") is not None:
        headers.append((b"Content-Length", str(length).encode()))
    return h11.Request(method=head.method.encode("latin-1"), target=head.target.encode("latin-1"), headers=headers)
