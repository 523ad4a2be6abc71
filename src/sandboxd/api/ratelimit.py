"""Request ids, API-key lookup, per-key rate limits and the body-size cap, in one ASGI middleware.

Every response (errors and streams included) carries X-Request-ID and X-RateLimit-Limit/-Remaining/-Reset.
Limits are a fixed one-minute window per API key (per client address when no valid key is sent).
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandboxd.api.auth import presented_key
from sandboxd.api.errors import PayloadTooLarge, error_body
from sandboxd.core.apikeys import ApiKeyService

WINDOW = 60
UNLIMITED_BODY_PREFIXES = ("/v1/templates/files/upload/",)  # streamed to disk with its own limit


@dataclass
class Window:
    start: int
    used: int


class RateLimiter:
    def __init__(self, default_per_minute: int):
        self.default = default_per_minute
        self._windows: dict[str, Window] = {}

    def hit(self, bucket: str, limit: int | None = None) -> tuple[bool, int, int, int]:
        """Count one request; returns (allowed, limit, remaining, reset_epoch)."""
        limit = limit or self.default
        now = int(time.time())
        start = now - now % WINDOW
        w = self._windows.get(bucket)
        if w is None or w.start != start:
            if len(self._windows) > 50000:
                self._windows = {k: v for k, v in self._windows.items() if v.start == start}
            w = self._windows[bucket] = Window(start, 0)
        reset = start + WINDOW
        if w.used >= limit:
            return False, limit, 0, reset
        w.used += 1
        return True, limit, limit - w.used, reset


class ControlPlaneMiddleware:
    def __init__(self, app: ASGIApp, *, keys: ApiKeyService, limiter: RateLimiter, max_body: int):
        self.app = app
        self.keys = keys
        self.limiter = limiter
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        rid = conn.headers.get("x-request-id") or "req_" + secrets.token_hex(12)
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        presented = presented_key(conn)
        key = self.keys.lookup(presented) if presented else None
        state["presented_key"] = presented
        state["api_key"] = key
        bucket = f"key:{key.id}" if key else f"ip:{scope.get('client', ('?',))[0]}"
        allowed, limit, remaining, reset = self.limiter.hit(bucket, key.rate_limit_per_minute if key else None)
        extra = [
            (b"x-request-id", rid.encode()),
            (b"x-ratelimit-limit", str(limit).encode()),
            (b"x-ratelimit-remaining", str(remaining).encode()),
            (b"x-ratelimit-reset", str(reset).encode()),
        ]
        if not allowed:
            retry = max(1, reset - int(time.time()))
            await _send_json(send, 429, error_body(429, "rate_limited", f"rate limit of {limit} requests per minute exceeded",
                                                   rid, {"retry_after_seconds": retry, "limit": limit}),
                             extra + [(b"retry-after", str(retry).encode())])
            return
        length = conn.headers.get("content-length")
        limited = not scope["path"].startswith(UNLIMITED_BODY_PREFIXES)
        if limited and length and length.isdigit() and int(length) > self.max_body:
            await _send_json(send, 413, error_body(413, "payload_too_large", f"body larger than {self.max_body} bytes",
                                                   rid, {"max_bytes": self.max_body}), extra)
            return

        seen = 0

        async def capped_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if limited and msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body:
                    raise PayloadTooLarge(f"body larger than {self.max_body} bytes", details={"max_bytes": self.max_body})
            return msg

        async def send_with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                headers = [h for h in msg.get("headers", []) if h[0].lower() != b"x-request-id"]
                msg = {**msg, "headers": headers + extra}
            await send(msg)

        await self.app(scope, capped_receive, send_with_headers)


async def _send_json(send: Send, status: int, body: dict, headers: list[tuple[bytes, bytes]]) -> None:
    import json

    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *headers]})
    await send({"type": "http.response.body", "body": data})
