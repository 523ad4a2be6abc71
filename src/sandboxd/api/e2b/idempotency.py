"""`Idempotency-Key` on create: a retried create returns the first one's sandbox instead of a second one.

Keys are per API key and kept in the store for 24 h (table `idempotency_keys`), so a control-plane
restart, or another control plane on the same PostgreSQL, still knows them. The same key with a
different body is a 409 `idempotency_request_mismatch`, as E2B answers; a retry that arrives while the
first create is still running waits for it. A replay answers with the sandbox as it is now (and a fresh
token for it); tokens themselves are never stored.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from sandboxd.errors import Conflict, Invalid
from sandboxd.core.store.db import Store
from sandboxd.core.store.tables import IdempotencyRow

TTL = timedelta(hours=24)
# A key still without a sandbox after this long belongs to a create that died with its control plane.
STALE = timedelta(minutes=10)
POLL = 0.2  # seconds between looks at a key another control plane is creating
KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")

Create = Callable[[], Awaitable[tuple[str, Any]]]  # -> (sandbox id, response)
Replay = Callable[[str], Awaitable[Any]]  # sandbox id -> response


class IdempotencyMismatch(Conflict):
    code = "idempotency_request_mismatch"


def _now() -> datetime:
    return datetime.now(timezone.utc)


class IdempotencyCache:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._running: dict[tuple[str, str], asyncio.Future] = {}  # creates in flight in this process

    @staticmethod
    def fingerprint(body: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()

    def _claim(self, owner: str, key: str, fp: str) -> str | None:
        """'' when this caller now owns the key, the sandbox id when it is done, None while it is running."""
        now = _now()
        try:
            with self.store.tx() as s:
                s.execute(delete(IdempotencyRow).where(IdempotencyRow.created_at < now - TTL))
                row = s.get(IdempotencyRow, (owner, key))
                if row is None:
                    s.add(IdempotencyRow(owner=owner, key=key, fingerprint=fp, sandbox_id=None, created_at=now))
                    return ""
                if row.fingerprint != fp:
                    raise IdempotencyMismatch("this Idempotency-Key was used with a different request body")
                if row.sandbox_id:
                    return row.sandbox_id
                if now - row.created_at > STALE:
                    row.created_at = now
                    return ""
                return None
        except IntegrityError:  # another control plane inserted it first
            return None

    def _finish(self, owner: str, key: str, sandbox_id: str | None) -> None:
        with self.store.tx() as s:
            row = s.get(IdempotencyRow, (owner, key))
            if row is None:
                return
            if sandbox_id is None:
                s.delete(row)  # a failed create may be retried with the same key
            else:
                row.sandbox_id = sandbox_id

    async def run(self, owner: str, key: str | None, body: dict[str, Any], create: Create, replay: Replay) -> Any:
        if key is None:
            return (await create())[1]
        if not (1 <= len(key) <= 255) or not set(key) <= KEY_CHARS:
            raise Invalid("Idempotency-Key must be 1-255 lowercase letters, digits or hyphens",
                          code="invalid_idempotency_key")
        fp = self.fingerprint(body)
        while True:
            state = await asyncio.to_thread(self._claim, owner, key, fp)
            if state == "":
                break
            if state:
                return await replay(state)
            local = self._running.get((owner, key))
            if local is not None:
                await asyncio.wait({local})  # its outcome is read back from the store
            else:
                await asyncio.sleep(POLL)
        fut = self._running[(owner, key)] = asyncio.get_running_loop().create_future()
        sandbox_id = None
        try:
            sandbox_id, result = await create()
            return result
        finally:
            try:
                await asyncio.shield(asyncio.to_thread(self._finish, owner, key, sandbox_id))
            finally:
                self._running.pop((owner, key), None)
                fut.set_result(None)
