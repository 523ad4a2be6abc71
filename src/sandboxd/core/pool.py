"""Warm pools: per template, N sandboxes started ahead of time (agent healthy, Python kernel pre-warmed where
the template has one), then frozen so they cost no CPU while they wait.

A pool member is created with the id it will carry for its whole life ("sb" + random hex, the same shape a
cold create draws) and it has never been shown to anyone: claiming one lends that id to the new sandbox's
row. So the container, its directory, its hostname, its token and every event share one id, exactly like
a cold sandbox, and no id translation exists anywhere. Members have no store row; `pool.json` in the data
dir remembers them so a restart adopts them (they are still frozen) instead of destroying them as strays.

Create calls `claim()` (synchronous: the event loop makes pop-from-pool atomic), inserts the row under the
claimed id, then `take()` resumes the member and hands it the user's env vars and resources. Anything that
goes wrong on that path destroys the member and returns None: the caller falls back to a cold start.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sandboxd.core.admission import Commitment
from sandboxd.errors import Invalid, NotFound
from sandboxd.runtime import agentclient
from sandboxd.runtime.base import Resources, RuntimeSandbox, RuntimeState, SandboxSpec

log = logging.getLogger(__name__)

FILL_CONCURRENCY = 2  # cold starts are CPU-bound: on 2 cores more parallel fills only slow each other
MAX_POOL = 200
RETRY_AFTER_FAILURE = 5.0  # seconds before a template whose fill failed is tried again
KERNEL_FEATURE = "ipython_kernel"
# Members are made at the lowest CPU weight: a refill competes with nobody's sandbox (a claim restores the
# default weight).
FILL_SHARES = 2
# A claim wakes the refill this late: the claimed sandbox's first command (a few ms after the create
# returns) does not share the CPU with the start of its replacement.
REFILL_DELAY = 0.05


def parse_targets(text: str) -> dict[str, int]:
    """"base=3,code-interpreter=2" -> {"base": 3, "code-interpreter": 2}."""
    out: dict[str, int] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, count = part.partition("=")
        try:
            n = int(count) if sep else 1
        except ValueError:
            raise Invalid(f"pool entry {part!r} is not template=count", code="invalid_pool") from None
        if not name.strip() or not 0 <= n <= MAX_POOL:
            raise Invalid(f"pool entry {part!r}: count must be 0..{MAX_POOL}", code="invalid_pool")
        out[name.strip()] = n
    return out


@dataclass
class Member:
    id: str
    template_id: str
    content_hash: str
    resources: Resources
    socket: Path
    warmed_at: float = field(default_factory=time.time)
    kernel: bool = False


@dataclass
class PoolStats:
    target: int = 0
    hits: int = 0
    misses: int = 0
    fill_failures: int = 0
    last_refill_lag: float | None = None  # seconds from a claim until the pool was back at its target
    max_refill_lag: float = 0.0
    last_error: str | None = None


class WarmPoolService:
    def __init__(self, settings, backend, catalog, in_use: Callable[[str], Any] | None = None):
        self.settings = settings
        # Returns the live sandbox with that id or raises NotFound: a member claimed just before a crash
        # (pool.json not yet rewritten) belongs to its user and must never be discarded as a member.
        self.in_use = in_use
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="pool-save")  # one writer keeps saves in order
        self.backend = backend
        self.catalog = catalog
        self.path = Path(settings.data_dir) / "pool.json"
        self.ready: dict[str, deque[Member]] = {}  # template id -> frozen members, oldest first
        self.claimed: dict[str, Member] = {}  # sandbox id -> member, between claim() and take()
        self.filling: dict[str, int] = {}
        self.stats: dict[str, PoolStats] = {}
        self.names: dict[str, str] = {}  # template id -> name, for reports
        self._short_since: dict[str, float] = {}  # template id -> when it first fell below target
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._fills: set[asyncio.Task] = set()
        self._gate = asyncio.Semaphore(FILL_CONCURRENCY)
        self._retry_at: dict[str, float] = {}
        self._making: dict[str, Resources] = {}  # fills in flight, by member id
        self.room: Callable[[Resources], bool] = lambda _res: True  # the lifecycle's host admission
        self._cold = 0  # cold creates in flight (users' creates the pool could not serve)
        self._no_cold = asyncio.Event()
        self._no_cold.set()
        self._restored: list[dict[str, Any]] = self._load()
        self._wanted = parse_targets(settings.pool)  # by name or id; resolved against the catalog at start

    # ---- lifetime -----------------------------------------------------------------------------------

    def owns(self, sandbox_id: str) -> bool:
        """True for members (also restored ones not yet checked): reconcile must not destroy them."""
        return (any(m["id"] == sandbox_id for m in self._restored)
                or any(m.id == sandbox_id for q in self.ready.values() for m in q))

    async def start(self) -> None:
        for ref, n in self._wanted.items():
            try:
                t = self.catalog.get(ref)
            except NotFound:
                log.warning("pool: template %s is unknown; not pooling it", ref)
                continue
            self.names[t.id] = t.name
            self._stat(t.id).target = n
        await self._adopt()
        self._task = asyncio.create_task(self._fill_loop(), name="warm-pool")
        self._wake.set()

    async def stop(self) -> None:
        """Leave the frozen members where they are (the next start adopts them); stop filling."""
        if self._task:
            self._task.cancel()
        for t in list(self._fills):
            t.cancel()
        await asyncio.gather(*([self._task] if self._task else []), *self._fills, return_exceptions=True)
        self._save()
        self._writer.shutdown(wait=True)

    async def _adopt(self) -> None:
        for doc in self._restored:
            sid, tid = doc["id"], doc["template_id"]
            if self._used(sid):
                continue
            try:
                state = await self.backend.state(sid)
            except Exception:
                state = None
            keep = state == RuntimeState.PAUSED and tid in self.stats and len(self.ready.get(tid, ())) < self.stats[tid].target
            if keep:
                self.ready.setdefault(tid, deque()).append(Member(
                    id=sid, template_id=tid, content_hash=doc["content_hash"], resources=Resources(**doc["resources"]),
                    socket=Path(doc["socket"]), warmed_at=doc.get("warmed_at", time.time()),
                    kernel=bool(doc.get("kernel"))))
            else:
                await self._discard(sid)
        self._restored = []
        self._save()

    def _used(self, sid: str) -> bool:
        if self.in_use is None:
            return False
        try:
            self.in_use(sid)
            return True
        except NotFound:
            return False
        except Exception:
            return True  # unsure: keeping a sandbox is recoverable, destroying a user's is not

    # ---- claim (the create hot path) ----------------------------------------------------------------

    def claim(self, template, internet_access: bool | None = None) -> str | None:
        """Reserve a frozen member of template's pool for a create; its id becomes the sandbox id."""
        st = self.stats.get(template.id)
        if st is None or st.target == 0:
            return None
        q = self.ready.get(template.id)
        if internet_access or not q:  # members have no network: egress is wired at cold create
            st.misses += 1
            self._wake.set()
            return None
        m = q.popleft()
        st.hits += 1
        self.claimed[m.id] = m
        self._short_since.setdefault(template.id, time.monotonic())
        self._save_soon()
        asyncio.get_running_loop().call_later(REFILL_DELAY, self._wake.set)
        return m.id

    def committed(self) -> Commitment:
        """What the frozen members and the fills in flight hold: host admission counts them like sandboxes."""
        mem = disk = 0
        for r in [*(m.resources for q in self.ready.values() for m in q), *self._making.values()]:
            mem, disk = mem + r.memory_mb, disk + r.disk_mb
        return Commitment(mem, disk)

    def unclaim(self, sandbox_id: str) -> None:
        """Give back a member claimed for a create that failed before it took it (its row was never stored):
        it is still frozen and unused, so it goes back to the front of its queue."""
        m = self.claimed.pop(sandbox_id, None)
        if m is None:
            return
        self.ready.setdefault(m.template_id, deque()).appendleft(m)
        self._stat(m.template_id).hits -= 1
        self._save_soon()

    async def take(self, template, spec: SandboxSpec) -> RuntimeSandbox | None:
        """Resume the member claimed under spec.id and make it the user's; None means: cold-start instead."""
        m = self.claimed.pop(spec.id, None)
        if m is None:
            return None
        try:
            if m.content_hash != spec.image.content_hash or m.resources.disk_mb != spec.resources.disk_mb:
                raise LookupError("template image or disk size changed since the member was made")
            await self.backend.resume(m.id)
            extra = {k: v for k, v in spec.env.items() if spec.image.env.get(k) != v}
            if extra:
                await agentclient.call_json(m.socket, "PUT", "/env", {"env_vars": extra})
            if extra or m.resources != spec.resources:  # else the member already is what the user gets
                await self.backend.update(m.id, spec)
        except Exception as exc:
            log.warning("pool: claimed member %s unusable (%s); cold start instead", m.id, exc)
            await self._discard(m.id)
            return None
        return RuntimeSandbox(id=m.id, state=RuntimeState.RUNNING, agent_socket=m.socket)

    @contextlib.contextmanager
    def cold_start(self):
        """Held by the lifecycle around a cold create. Refills wait while any runs: a refill costs what a
        cold start costs (plus the kernel warm-up) and serves a later user, the cold start serves one now.
        Measured, 4 clients creating flat out for 20 s: 9.9 creates/s with refills competing, 12.1 without."""
        self._cold += 1
        self._no_cold.clear()
        try:
            yield
        finally:
            self._cold -= 1
            if self._cold == 0:
                self._no_cold.set()

    # ---- filling ------------------------------------------------------------------------------------

    def set_target(self, template, count: int) -> PoolStats:
        if not 0 <= count <= MAX_POOL:
            raise Invalid(f"pool size must be 0..{MAX_POOL}", code="invalid_pool")
        self.names[template.id] = template.name
        self._stat(template.id).target = count
        self._retry_at.pop(template.id, None)
        self._save_soon()
        self._wake.set()
        return self.stats[template.id]

    async def _fill_loop(self) -> None:
        while True:
            self._wake.clear()
            for tid, st in list(self.stats.items()):
                q = self.ready.setdefault(tid, deque())
                while len(q) > st.target:  # shrunk: the newest members go first
                    self._spawn(self._discard(q.pop().id))
                have = len(q) + self.filling.get(tid, 0)
                if have >= st.target:
                    if len(q) >= st.target and tid in self._short_since:
                        lag = time.monotonic() - self._short_since.pop(tid)
                        st.last_refill_lag, st.max_refill_lag = lag, max(st.max_refill_lag, lag)
                    continue
                if time.monotonic() < self._retry_at.get(tid, 0):
                    continue
                for _ in range(st.target - have):
                    self.filling[tid] = self.filling.get(tid, 0) + 1
                    self._spawn(self._fill_one(tid))
            timeout = 1.0 if self._retry_at else None
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._fills.add(task)
        task.add_done_callback(self._fills.discard)

    async def _fill_one(self, tid: str) -> None:
        sid = "sb" + secrets.token_hex(9)
        created = False
        try:
            async with self._gate:
                await self._no_cold.wait()
                template = self.catalog.get(tid)
                image = await self.catalog.image(template)
                res = Resources(vcpu=float(template.vcpu), memory_mb=template.memory_mb,
                                disk_mb=template.disk_gb * 1024, pids=self.settings.default_pids,
                                cpu_shares=FILL_SHARES)
                if not self.room(res):  # a full host serves its users' creates, not the pool
                    raise LookupError("no room on this host for another member")
                spec = SandboxSpec(id=sid, image=image, resources=res, env=dict(image.env), hostname=sid)
                self._making[sid] = res
                created = True
                rt = await self.backend.create(spec)
                # The agent loads its command machinery and its E2B routes (~14 ms CPU) on first use: pay
                # that here, not in the user's first request (docs/performance.md).
                await agentclient.call_json(rt.agent_socket, "POST", "/commands/run", {"command": "true", "timeout": 30})
                try:  # loads the E2B (envd) routes; a member without them still serves HopX users
                    await agentclient.call_json(rt.agent_socket, "GET", "/e2b/49983/health", None)
                except OSError as exc:
                    log.warning("pool: E2B routes of %s not loaded: %s", sid, exc)
                kernel = KERNEL_FEATURE in (template.features or [])
                if kernel:  # the first run_code would pay ~1 s for the kernel start; pay it now
                    doc = await agentclient.call_json(rt.agent_socket, "POST", "/jupyter/warm", {}, timeout=60)
                    kernel = bool(doc.get("success"))
                await self.backend.pause(sid)
            m = Member(id=sid, template_id=tid, content_hash=image.content_hash, resources=res,
                       socket=rt.agent_socket, kernel=kernel)
            self.ready.setdefault(tid, deque()).append(m)
            self._save_soon()
            self._retry_at.pop(tid, None)
        except asyncio.CancelledError:
            if created:
                await asyncio.shield(self._discard(sid))
            raise
        except Exception as exc:
            log.warning("pool: filling %s failed: %s", self.names.get(tid, tid), exc)
            st = self._stat(tid)
            st.fill_failures += 1
            st.last_error = str(exc)[:300]
            self._retry_at[tid] = time.monotonic() + RETRY_AFTER_FAILURE
            if created:
                await self._discard(sid)
        finally:
            self._making.pop(sid, None)
            self.filling[tid] = max(self.filling.get(tid, 1) - 1, 0)
            self._wake.set()

    async def _discard(self, sid: str) -> None:
        try:
            await self.backend.destroy(sid)
        except Exception:
            log.exception("pool: destroying member %s failed", sid)

    # ---- reports ------------------------------------------------------------------------------------

    def _stat(self, tid: str) -> PoolStats:
        return self.stats.setdefault(tid, PoolStats())

    def report(self) -> list[dict[str, Any]]:
        out = []
        for tid, st in sorted(self.stats.items(), key=lambda kv: self.names.get(kv[0], kv[0])):
            q = self.ready.get(tid, ())
            out.append({
                "template_id": tid, "template_name": self.names.get(tid, tid), "target": st.target,
                "ready": len(q), "filling": self.filling.get(tid, 0), "hits": st.hits, "misses": st.misses,
                "fill_failures": st.fill_failures, "last_refill_lag_seconds": st.last_refill_lag,
                "max_refill_lag_seconds": st.max_refill_lag, "kernel_warm": sum(1 for m in q if m.kernel),
                "last_error": st.last_error,
            })
        return out

    def prometheus(self) -> str:
        rows = self.report()
        lines = []
        for metric, kind, key, help_ in (
            ("sandboxd_pool_target", "gauge", "target", "Configured warm pool size"),
            ("sandboxd_pool_ready", "gauge", "ready", "Frozen sandboxes waiting in the pool"),
            ("sandboxd_pool_filling", "gauge", "filling", "Pool sandboxes being started"),
            ("sandboxd_pool_hits_total", "counter", "hits", "Creates served from the pool"),
            ("sandboxd_pool_misses_total", "counter", "misses", "Creates that found the pool empty"),
            ("sandboxd_pool_fill_failures_total", "counter", "fill_failures", "Pool sandboxes that failed to start"),
            ("sandboxd_pool_refill_lag_seconds", "gauge", "last_refill_lag_seconds",
             "Seconds from the last claim until the pool was full again"),
        ):
            lines += [f"# HELP {metric} {help_}", f"# TYPE {metric} {kind}"]
            for r in rows:
                v = r[key]
                lines.append(f'{metric}{{template="{r["template_name"]}"}} {0 if v is None else v}')
        return "\n".join(lines) + "\n"

    # ---- persistence --------------------------------------------------------------------------------

    def _load(self) -> list[dict[str, Any]]:
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        for tid, n in (doc.get("targets") or {}).items():
            self._stat(tid).target = int(n)
        self.names.update(doc.get("names") or {})
        return list(doc.get("members") or [])

    def _save_soon(self) -> None:
        """Snapshot now, write on the writer thread: the claim path never waits for the disk."""
        self._writer.submit(self._write, self._doc())

    def _save(self) -> None:
        self._writer.submit(self._write, self._doc()).result()

    def _doc(self) -> dict[str, Any]:
        members = [{"id": m.id, "template_id": m.template_id, "content_hash": m.content_hash,
                    "resources": m.resources.__dict__, "socket": str(m.socket), "warmed_at": m.warmed_at,
                    "kernel": m.kernel} for q in self.ready.values() for m in q]
        return {"targets": {tid: st.target for tid, st in self.stats.items()}, "names": dict(self.names),
                "members": members + list(self._restored)}

    def _write(self, doc: dict[str, Any]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, self.path)
        except OSError:
            log.exception("pool: could not save %s", self.path)


__all__ = ["WarmPoolService", "parse_targets"]
