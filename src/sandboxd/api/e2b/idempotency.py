"""`Idempotency-Key` on create: a retried create returns the first one's sandbox instead of a second one.

Keys are per API key, remembered in memory for 24 h (a control-plane restart forgets them). The same
key with a different body is a 409 `idempotency_request_mismatch`, as E2B answers; a retry that arrives
while the first create is still running waits for it.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any, Awaitable, Callable

from sandboxd.core.errors import Conflict, Invalid

TTL = 24 * 3600
MAX_KEYS = 10000


class IdempotencyMismatch(Conflict):
    code = "idempotency_request_mismatch"


class IdempotencyCache:
    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[str, float, asyncio.Future]] = {}

    @staticmethod
    def fingerprint(body: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()

    def _expire(self) -> None:
        now = time.monotonic()
        for k in [k for k, (_, t, _) in self._entries.items() if now - t > TTL]:
            del self._entries[k]
        while len(self._entries) > MAX_KEYS:
            del self._entries[next(iter(self._entries))]

    async def run(self, owner: str, key: str | None, body: dict[str, Any],
                  create: Callable[[], Awaitable[Any]]) -> Any:
        if key is None:
            return await create()
        if not (1 <= len(key) <= 255) or any(c not in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in key):
            raise Invalid("Idempotency-Key must be 1-255 lowercase letters, digits or hyphens",
                          code="invalid_idempotency_key")
        self._expire()
        fp = self.fingerprint(body)
        entry = self._entries.get((owner, key))
        if entry is not None:
            seen_fp, _, fut = entry
            if seen_fp != fp:
                raise IdempotencyMismatch("this Idempotency-Key was used with a different request body")
            return await asyncio.shield(fut)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._entries[(owner, key)] = (fp, time.monotonic(), fut)
        try:
            result = await create()
        except BaseException as exc:
            # A failed create may be retried with the same key: forget it, and tell any waiter.
            self._entries.pop((owner, key), None)
            if not fut.done():
                fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError("create cancelled"))
                fut.exception()  # mark retrieved: nobody may be waiting
            raise
        fut.set_result(result)
        return result
