"""The control plane's HTTP listener: uvicorn's h11 protocol with deadlines and connection caps.

uvicorn times out idle keep-alive connections (`timeout_keep_alive`) and answers 503 over
`limit_concurrency`, but only once a request head has arrived: a client that sends its head a byte at a
time (or nothing at all) holds its connection forever, and enough of them exhaust the server's sockets
without ever authenticating. So, on top of uvicorn's own parsing (h11: nothing hand-written here):

- a head deadline: from the moment a connection waits for a request (when it opens, and again after each
  response) the whole head must arrive within `api_head_timeout_seconds`, else the connection is closed;
- connection caps, counted when a connection opens: over `api_max_connections_per_ip` for its address or
  `api_max_connections` in all, the client gets a 503 in the API's error shape and the connection closes.

Bodies are read by the app as it needs them and are bounded by `max_body_bytes`; streams (SSE) are long
by design and count against the caps like any connection.
"""
from __future__ import annotations

import asyncio
import json
import secrets
from collections import Counter
from dataclasses import dataclass, field

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from sandboxd.api.errors import error_body

REFUSED_LINGER = 1.0  # seconds a refused connection is read (and dropped) before it closes


@dataclass
class ConnectionLimits:
    head_timeout: float
    max_connections: int
    max_per_ip: int
    open: Counter = field(default_factory=Counter)  # client address -> open connections

    @property
    def total(self) -> int:
        return sum(self.open.values())


def refusal(code: str, message: str, details: dict) -> bytes:
    """A whole 503 answer, written before any request was read (so there is none to take an id from)."""
    rid = "req_" + secrets.token_hex(12)
    body = json.dumps(error_body(503, code, message, rid, details)).encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"retry-after: 1\r\nx-request-id: " + rid.encode() + b"\r\ncontent-length: " + str(len(body)).encode()
            + b"\r\n\r\n" + body)


class GuardedH11Protocol(H11Protocol):
    limits: ConnectionLimits  # set on the subclass `protocol_for` makes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._addr = self.client[0] if self.client else "?"
        limits = self.limits
        over = None
        if limits.total >= limits.max_connections:
            over = refusal("too_many_connections", "the server has too many open connections; retry shortly",
                           {"limit": limits.max_connections})
        elif limits.open[self._addr] >= limits.max_per_ip:
            over = refusal("too_many_connections_from_address",
                           "too many open connections from this address; retry shortly",
                           {"limit": limits.max_per_ip})
        self._counted = self._refused = False
        if over is not None:
            # Answer, stop writing, and read (and drop) the request still coming for a moment: closing at once
            # would answer the client's request bytes with a reset, which discards the 503 unread.
            self._refused = True
            transport.write(over)
            if transport.can_write_eof():
                transport.write_eof()
            self.loop.call_later(min(self.limits.head_timeout, REFUSED_LINGER), transport.close)
            return
        self._counted = True
        limits.open[self._addr] += 1
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        if getattr(self, "_counted", False):
            self._counted = False
            self.limits.open[self._addr] -= 1
            if self.limits.open[self._addr] <= 0:
                del self.limits.open[self._addr]
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # h11 has the whole head: the request is under way
            self._disarm_head_timer()

    def eof_received(self) -> None:
        if self._refused:
            self.transport.close()
        super().eof_received()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm_head_timer()  # the next request's head has the same deadline

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def protocol_for(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """The protocol class for uvicorn's `http=` (uvicorn builds one instance per connection)."""
    return type("ApiH11Protocol", (GuardedH11Protocol,), {"limits": limits})


def limits_from(settings) -> ConnectionLimits:
    return ConnectionLimits(settings.api_head_timeout_seconds, settings.api_max_connections,
                            settings.api_max_connections_per_ip)
