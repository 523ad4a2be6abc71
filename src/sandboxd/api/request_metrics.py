"""Counts and times every HTTP request of the control plane by route template (monitor/http_metrics.py).

Outermost middleware, so answers the rate limiter and the body cap give are counted too. The time is to the
answer's head: an SSE stream counts once, when it starts.
"""
from __future__ import annotations

import time
from typing import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandboxd.monitor.http_metrics import OTHER

Observe = Callable[[str, str, int, float], None]  # route, method, status, seconds


def route_of(scope: Scope) -> str:
    """The template of the route that took the request (FastAPI records it in the scope while routing)."""
    route = scope.get("route")
    return getattr(route, "path_format", None) or getattr(route, "path", None) or OTHER


class RequestMetrics:
    def __init__(self, app: ASGIApp, *, observe: Observe):
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        answered = False

        async def timed_send(msg: Message) -> None:
            nonlocal answered
            if msg["type"] == "http.response.start" and not answered:
                answered = True
                self.observe(route_of(scope), scope["method"], msg["status"], time.perf_counter() - start)
            await send(msg)

        try:
            await self.app(scope, receive, timed_send)
        except Exception:
            if not answered:  # Starlette's outer error handler answers 500
                self.observe(route_of(scope), scope["method"], 500, time.perf_counter() - start)
            raise
