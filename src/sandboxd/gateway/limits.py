"""Deadlines and connection caps of the gateway's client connections.

Nothing about a connection is known before its request head is parsed and its token checked, so an
unauthenticated client must not be able to hold connections open for free: the head must arrive whole
within `head_timeout` (from the moment the gateway waits for it), an idle keep-alive connection closes
after `keep_alive`, and connections are capped per client address and in all (counted when they open;
over a cap the client gets a 503 in the gateway's error shape and the connection closes). A request
body may not exceed `max_body` (413).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sandboxd.gateway.errors import error_bytes


@dataclass
class Limits:
    head_timeout: float = 10.0
    keep_alive: float = 15.0
    max_connections: int = 1000
    max_per_ip: int = 200
    max_body: int | None = None
    open: Counter = field(default_factory=Counter)  # client address -> open connections
    total: int = 0

    @classmethod
    def from_settings(cls, settings) -> Limits:
        return cls(head_timeout=settings.gateway_head_timeout_seconds, keep_alive=settings.gateway_keep_alive_seconds,
                   max_connections=settings.gateway_max_connections,
                   max_per_ip=settings.gateway_max_connections_per_ip, max_body=settings.gateway_max_body_bytes)

    def admit(self, addr: str) -> bytes | None:
        """Count a new connection from `addr`, or the 503 to answer it with (then it is not counted)."""
        if self.total >= self.max_connections:
            return error_bytes(503, "TOO_MANY_CONNECTIONS", "the gateway has too many open connections; retry shortly",
                               {"limit": self.max_connections}, close=True)
        if self.open[addr] >= self.max_per_ip:
            return error_bytes(503, "TOO_MANY_CONNECTIONS",
                               "too many open connections from this address; retry shortly",
                               {"limit": self.max_per_ip}, close=True)
        self.open[addr] += 1
        self.total += 1
        return None

    def release(self, addr: str) -> None:
        self.total -= 1
        self.open[addr] -= 1
        if self.open[addr] <= 0:
            del self.open[addr]
