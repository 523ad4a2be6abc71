"""Webhook delivery through a durable outbox.

Fan-out reads the events table after a stored cursor and writes one outbox row per (event, matching
webhook) in the same transaction that advances the cursor, so a crash at any point either replays
the fan-out or has already recorded it. The bus only wakes the loop; the table is the truth.

One worker per webhook sends that webhook's rows strictly in event order: the head row is retried
with exponential backoff until it succeeds or runs out of attempts, then the next one goes.
A row is marked delivered only after a 2xx, so a kill mid-request means a redelivery (at-least-once;
receivers de-duplicate on the payload `id`). Everything runs in background tasks with timeouts, so
a slow or dead receiver never holds up an API request.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Callable, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy import func, select

from sandboxd.errors import Invalid
from sandboxd.core.eventlog import to_event
from sandboxd.core.events import EventBus
from sandboxd.core.store.db import Store
from sandboxd.core.store.monitoring import CursorRow, DeliveryRow, WebhookRow
from sandboxd.core.store.tables import DEFAULT_TEAM_ID, EventRow
from sandboxd.monitor.e2b_events import load_facts, to_webhook_payload
from sandboxd.monitor.webhooks import check_url, sign_v1

log = logging.getLogger(__name__)
CURSOR = "webhooks"
FANOUT_BATCH = 500
POLL_SECONDS = 0.5
COALESCE_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 300.0


class FanOut(NamedTuple):
    read: int  # events read past the cursor
    queued: int  # delivery rows queued
    hooks: int  # enabled webhooks


def fan_out(store: Store) -> FanOut:
    """Queue outbox rows for events not yet fanned out."""
    with store.tx() as s:
        cur = s.get(CursorRow, CURSOR)
        if cur is None:
            cur = CursorRow(name=CURSOR, event_id=0)
            s.add(cur)
        hooks = list(s.scalars(select(WebhookRow).where(WebhookRow.enabled.is_(True))))
        if not hooks:  # the usual case: step over the new events without loading them (a webhook made later
            # starts after the events that exist when it is made, see WebhookRegistry.create)
            count, last = s.execute(select(func.count(), func.max(EventRow.id)).where(EventRow.id > cur.event_id)).one()
            if last is not None:
                cur.event_id = last
            return FanOut(min(count, FANOUT_BATCH - 1), 0, 0)  # all stepped over: no further pass needed
        events = [to_event(r) for r in s.scalars(select(EventRow).where(EventRow.id > cur.event_id).order_by(EventRow.id).limit(FANOUT_BATCH))]
        if not events:
            return FanOut(0, 0, len(hooks))
        now = datetime.now(timezone.utc)
        queued = 0
        facts = load_facts(store, {e.sandbox_id for e in events if e.sandbox_id}) if hooks else {}
        for e in events:
            body = None
            for w in hooks:
                if e.type not in w.events or (e.id or 0) <= w.after_event_id:
                    continue
                fact = facts.get(e.sandbox_id or "")
                if (fact.team_id if fact is not None else DEFAULT_TEAM_ID) != w.team_id:
                    continue  # a webhook hears its own team's sandboxes only
                if body is None:
                    payload = to_webhook_payload(e, facts.get(e.sandbox_id or ""))
                    body = json.dumps(payload, separators=(",", ":"))
                s.add(DeliveryRow(id=str(uuid.uuid4()), webhook_id=w.id, event_id=e.id, event_type=e.type, sandbox_id=e.sandbox_id,
                                  status="pending", body=body, attempts=0, next_attempt_at=0.0, created_at=now, updated_at=now))
                queued += 1
        cur.event_id = events[-1].id  # type: ignore[assignment]  # events read from the store have their id
        return FanOut(len(events), queued, len(hooks))


def pinned(url: str, address: str, headers: dict[str, str]) -> tuple[str, dict]:
    """The request to `url` sent to `address`, the checked one: httpx would otherwise resolve the name
    again at connect time. The Host header keeps the name, and for https the TLS server name (SNI and
    certificate verification) is the name too, so the receiver sees the request it was registered for."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    ip = f"[{address}]" if ":" in address else address
    netloc = ip if parts.port is None else f"{ip}:{parts.port}"
    headers["host"] = parts.netloc
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return urlunsplit(parts._replace(netloc=netloc)), extensions


class Dispatcher:
    def __init__(self, store: Store, bus: EventBus | None, *, timeout: float, max_attempts: int, backoff: float,
                 allow_private: bool, on_outcome: Callable[[str, float], None] | None = None):
        self.store = store
        self.bus = bus
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.allow_private = allow_private
        self.on_outcome = on_outcome
        self._wake = asyncio.Event()
        # No enabled webhook and nothing pending: an event needs no pass of its own (a webhook starts after
        # the events that exist when it is made). The poll still advances the cursor and notices a webhook
        # made by another process; a change through this one wakes the loop (wake()).
        self._idle = False
        self._workers: dict[str, asyncio.Task] = {}
        self._task: asyncio.Task | None = None
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        # No redirects: a public URL must not bounce a signed request onto an internal address.
        self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False, trust_env=False)
        self._task = asyncio.create_task(self._loop(), name="webhook-dispatcher")

    async def stop(self) -> None:
        tasks = [t for t in [self._task, *self._workers.values()] if t]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        if self._client:
            await self._client.aclose()

    def wake(self) -> None:
        """Run a pass now (webhooks changed). Safe from any thread: the API's sync handlers run on workers."""
        if self._task is not None and not self._task.done():
            self._task.get_loop().call_soon_threadsafe(self._wake.set)

    async def _loop(self) -> None:
        q = self.bus.subscribe() if self.bus else None
        try:
            while True:
                try:
                    done = await asyncio.to_thread(fan_out, self.store)
                    while done.read == FANOUT_BATCH:
                        done = await asyncio.to_thread(fan_out, self.store)
                    work = await asyncio.to_thread(self._webhooks_with_work)
                    for webhook_id in work:
                        t = self._workers.get(webhook_id)
                        if t is None or t.done():
                            self._workers[webhook_id] = asyncio.create_task(self._worker(webhook_id), name=f"webhook-{webhook_id}")
                    self._idle = done.hooks == 0 and not work
                except Exception:
                    self._idle = False
                    log.exception("webhook dispatcher pass failed")
                await self._sleep(q)
        finally:
            if q is not None and self.bus:
                self.bus.unsubscribe(q)

    async def _sleep(self, q: asyncio.Queue | None) -> None:
        waits = [asyncio.create_task(self._wake.wait())]
        if q is not None and not self._idle:
            waits.append(asyncio.create_task(q.get()))
        try:
            done, _ = await asyncio.wait(waits, timeout=POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            if done:
                # Woken by an event: let the burst finish first. One pass then covers many events, and it does
                # not compete with the request that caused the event (a create's first command follows it).
                await asyncio.sleep(COALESCE_SECONDS)
        finally:
            for w in waits:
                w.cancel()
            self._wake.clear()
            while q is not None and not q.empty():
                q.get_nowait()

    def _webhooks_with_work(self) -> list[str]:
        with self.store.tx() as s:
            return list(s.scalars(select(DeliveryRow.webhook_id).where(DeliveryRow.status == "pending").distinct()))

    def _head(self, webhook_id: str) -> tuple[WebhookRow | None, DeliveryRow | None]:
        with self.store.tx() as s:
            w = s.get(WebhookRow, webhook_id)
            d = s.scalars(select(DeliveryRow).where(DeliveryRow.webhook_id == webhook_id, DeliveryRow.status == "pending")
                          .order_by(DeliveryRow.event_id).limit(1)).first()
            return w, d

    async def _worker(self, webhook_id: str) -> None:
        while True:
            w, d = await asyncio.to_thread(self._head, webhook_id)
            if w is None or d is None or not w.enabled:
                return  # deleted, drained, or disabled (pending rows wait until it is enabled again)
            wait = d.next_attempt_at - time.time()
            if wait > 0:
                await asyncio.sleep(min(wait, 1.0))  # short naps: notice edits and deletion while backing off
                continue
            await self._attempt(w, d)

    async def _attempt(self, w: WebhookRow, d: DeliveryRow) -> None:
        attempt_id = str(uuid.uuid4())
        body = d.body.encode()
        headers = {"content-type": "application/json", "user-agent": "sandboxd-webhooks/1",
                   "e2b-webhook-id": w.id, "e2b-delivery-id": attempt_id,
                   "e2b-signature-version": "v1", "e2b-signature": sign_v1(w.secret, body)}
        status: int | None = None
        error: str | None = None
        t0 = time.perf_counter()
        try:
            # Checked again here: DNS may have changed since the webhook was registered.
            addrs = await asyncio.to_thread(check_url, w.url, allow_private=self.allow_private)
            assert self._client is not None
            url, extensions = pinned(w.url, addrs[0], headers)
            resp = await self._client.post(url, content=body, headers=headers, extensions=extensions)
            status = resp.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except Invalid as exc:
            error = exc.message
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        latency = (time.perf_counter() - t0) * 1000
        attempts = d.attempts + 1
        if error is None:
            outcome = "delivered"
        elif attempts >= self.max_attempts:
            outcome = "failed"
        else:
            outcome = "retry"
        delay = min(MAX_BACKOFF_SECONDS, self.backoff * 2 ** (attempts - 1))
        await asyncio.to_thread(self._record, d.id, attempts, attempt_id, outcome, status, error, latency, delay)
        if self.on_outcome:
            self.on_outcome(outcome, latency / 1000)

    def _record(self, delivery_id: str, attempts: int, attempt_id: str, outcome: str, status: int | None,
                error: str | None, latency: float, delay: float) -> None:
        with self.store.tx() as s:
            d = s.get(DeliveryRow, delivery_id)
            if d is None:  # webhook deleted meanwhile
                return
            d.attempts = attempts
            d.last_attempt_id = attempt_id
            d.response_status = status
            d.error = error
            d.latency_ms = latency
            d.updated_at = datetime.now(timezone.utc)
            d.status = "pending" if outcome == "retry" else outcome
            if outcome == "retry":
                d.next_attempt_at = time.time() + delay
