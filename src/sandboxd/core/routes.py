"""The gateway's routing table: what proxying needs per live sandbox, kept in memory so no request touches
the database. The lifecycle writes it; the gateway, the E2B resolver and the metrics feed read it.

A sandbox has a route while it can receive traffic or is about to (running, paused, starting again); a kill
drops it before the sandbox is destroyed, and once the kill is recorded the table tells its subscribers the
sandbox is gone (the gateway closes its kept connections to that agent).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

GoneListener = Callable[[str, Path], None]  # (sandbox id, its agent socket)


@dataclass
class SandboxRoute:
    socket: Path  # the agent's unix socket
    status: str
    token_version: int  # tokens of another version are revoked
    public_traffic: bool = True
    used: float = field(default_factory=time.monotonic)  # the last gateway request for it (core/eviction.py)


class RouteTable:
    def __init__(self) -> None:
        self._routes: dict[str, SandboxRoute] = {}
        # Every gateway request reads the table: the lookup is the dict's own, no call in between.
        self.get: Callable[[str], SandboxRoute | None] = self._routes.get
        self.gone_listeners: list[GoneListener] = []

    def put(self, sandbox_id: str, route: SandboxRoute) -> None:
        self._routes[sandbox_id] = route

    def drop(self, sandbox_id: str) -> SandboxRoute | None:
        """Stop routing to the sandbox; its route, for a put back should its kill fail."""
        return self._routes.pop(sandbox_id, None)

    def set_status(self, sandbox_id: str, status: str) -> None:
        route = self._routes.get(sandbox_id)
        if route is not None:
            route.status = status

    def subscribe_gone(self, listener: GoneListener) -> None:
        self.gone_listeners.append(listener)

    def gone(self, sandbox_id: str, route: SandboxRoute) -> None:
        """The sandbox of this (dropped) route is destroyed: tell the subscribers."""
        for listener in self.gone_listeners:
            listener(sandbox_id, route.socket)

    def __contains__(self, sandbox_id: object) -> bool:
        return sandbox_id in self._routes

    def __getitem__(self, sandbox_id: str) -> SandboxRoute:
        return self._routes[sandbox_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def items(self) -> list[tuple[str, SandboxRoute]]:
        """A snapshot: the caller may await between items while the table changes."""
        return list(self._routes.items())
