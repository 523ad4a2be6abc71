"""The sandbox service: the state machine, create/list/get/kill/pause/resume/stop/start, timeouts, recovery.

It knows no HTTP. Rows in the store are the truth clients see; the backend is the truth about processes;
`recover()` makes them agree after a restart. Create is one clean sequence a warm pool can short-circuit:
reserve row -> backend.create (returns once the agent is healthy) -> mark running.
"""
from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import secrets
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Protocol

from sqlalchemy import and_, case, func, or_, select

from sandboxd.config import Settings
from sandboxd.core.admission import Admission, Commitment, check_maxima, sandbox_maxima
from sandboxd.core import events as ev
from sandboxd.core import quotas
from sandboxd.core.catalog import SNAPSHOT, snapshot_memory
from sandboxd.core.egress import ALL_TRAFFIC, EgressPolicy
from sandboxd.core.eviction import EVICTED, Evictor
from sandboxd.errors import CapacityExceeded, Conflict, Invalid, NotFound, NotSupported, RuntimeFailure, SandboxdError
from sandboxd.core.eventlog import EventLog
from sandboxd.core.models import (
    decode_cursor, encode_cursor, CREATING, KILLED, LIVE_STATES, PAUSED, REASON_ERROR, REASON_NODE_LOST, REASON_TIMEOUT,
    REASON_USER, RUNNING, ON_TIMEOUT, ON_TIMEOUT_KILL, ON_TIMEOUT_PAUSE,
    STOPPED, Sandbox, Template, iso,
)
from sandboxd.core.routes import RouteTable, SandboxRoute
from sandboxd.core.startup import rerun_start, run_start
from sandboxd.core.store.db import Store
from sandboxd.core.store.tables import DEFAULT_TEAM_ID, SandboxRow
from sandboxd.core.tokens import TokenSigner
from sandboxd.core.volumes import Mount, require_volumes, volume_dir
from sandboxd.runtime.base import Backend, EgressDenied, Resources, RuntimeSandbox, SandboxSpec, TemplateImage

log = logging.getLogger(__name__)

CREATE_CONCURRENCY = 8  # cold starts are CPU-bound; more in parallel only makes each one slower
WATCH_EVERY = 25  # expiry ticks (0.2 s) between checks for sandboxes that died on their own: 5 s


class Catalog(Protocol):
    """What the lifecycle asks of the template catalog (core/catalog.py)."""

    def get(self, id_or_name: str, team: str | None = None) -> Template: ...

    async def image(self, template: Template) -> TemplateImage: ...

    def sync_builtins(self) -> None:
        """List built-ins whose image exists by now (`sandboxd setup` may run while the server does)."""


class WarmPool(Protocol):
    """What the lifecycle asks of the warm pool (core/pool.py)."""

    def claim(self, template: Template, internet_access: bool | None = None) -> str | None:
        """Reserve a member for a create, synchronously (no other create can take it); its id or None."""

    def unclaim(self, sandbox_id: str) -> None:
        """Give back a claimed member whose create failed before take()."""

    async def take(self, template: Template, spec: SandboxSpec) -> RuntimeSandbox | None: ...

    def cold_start(self) -> contextlib.AbstractContextManager[None]:
        """Held around a cold create: refills wait meanwhile."""

    def committed(self) -> Commitment: ...

    def owns(self, sandbox_id: str) -> bool:
        """The sandbox is a member of the pool (reconcile leaves those to it)."""


@dataclass
class CreateRequest:
    template_id: str | None = None
    template_name: str | None = None
    region: str | None = None
    timeout_seconds: int | None = None
    internet_access: bool | None = None
    env_vars: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    public_traffic: bool = True
    # Limits of this sandbox; None: the template's (docs/teams.md#resources-at-create).
    vcpu: float | None = None
    memory_mb: int | None = None
    disk_mb: int | None = None
    on_timeout: str = ON_TIMEOUT_KILL  # what its timeout does (docs/e2b.md)
    auto_resume: bool = False
    egress: EgressPolicy | None = None  # None: only the operator's floor (docs/network.md)
    volume_mounts: list[Mount] = field(default_factory=list)  # the team's volumes, resolved (core/volumes.py)
    # A memory fork's child (core/snapshots.py): restored from these images of its parent instead of booted.
    memory_from: Any = None

    def __post_init__(self) -> None:
        if self.on_timeout not in ON_TIMEOUT:
            raise Invalid(f"unknown on_timeout {self.on_timeout!r}; use one of {', '.join(ON_TIMEOUT)}",
                          code="invalid_lifecycle")
        if self.auto_resume and self.on_timeout != ON_TIMEOUT_PAUSE:
            # Traffic can only thaw a frozen sandbox: a filesystem-only pause ended its processes (a connect
            # boots it again), a kill ended it.
            raise Invalid("auto-resume needs a timeout that pauses the sandbox with its memory",
                          code="invalid_lifecycle")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _usage(s) -> tuple[int, Commitment]:
    """Live sandboxes (IN over the live states, not != killed: the status index then skips the never pruned
    killed rows), and what they commit: memory for those holding it (a stopped one holds none), disk for all."""
    holds = SandboxRow.status.in_((CREATING, RUNNING, PAUSED))
    n, mem, disk = s.execute(
        select(func.count(), func.coalesce(func.sum(case((holds, SandboxRow.memory_mb), else_=0)), 0),
               func.coalesce(func.sum(SandboxRow.disk_mb), 0))
        .where(SandboxRow.status.in_(LIVE_STATES))).one()
    return n, Commitment(memory_mb=int(mem), disk_mb=int(disk))


def _to_model(r: SandboxRow) -> Sandbox:
    return Sandbox(
        id=r.id, status=r.status, template_id=r.template_id, template_name=r.template_name, region=r.region,
        node_id=r.node_id, vcpu=r.vcpu, memory_mb=r.memory_mb, disk_mb=r.disk_mb,
        internet_access=r.internet_access, env_vars=dict(r.env_vars or {}), timeout_seconds=r.timeout_seconds,
        expires_at=r.expires_at, created_at=r.created_at, started_at=r.started_at, ended_at=r.ended_at,
        kill_reason=r.kill_reason, token_version=r.token_version, metadata=dict(r.metadata_ or {}),
        public_traffic=r.public_traffic is not False, team_id=r.team_id, egress=r.egress,
        on_timeout=r.on_timeout or ON_TIMEOUT_KILL, auto_resume=bool(r.auto_resume),
        volume_mounts=list(r.volume_mounts or ()),
    )


class LifecycleService:
    def __init__(self, settings: Settings, store: Store, backend: Backend, events: EventLog, catalog: Catalog,
                 signer: TokenSigner):
        self.settings = settings
        self.store = store
        self.backend = backend
        self.events = events
        self.catalog = catalog
        self.signer = signer
        self.pool: WarmPool | None = None
        self.routes = RouteTable()
        self._expiry: dict[str, datetime] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._create_gate = asyncio.Semaphore(CREATE_CONCURRENCY)
        self._expiry_task: asyncio.Task | None = None
        self._watch: asyncio.Task | None = None
        self._kill_tasks: set[asyncio.Task] = set()
        self._starting: dict[str, tuple[str | None, float, int]] = {}  # sid -> team, vcpu, memory_mb
        self._waking: dict[str, asyncio.Task[bool]] = {}  # resumes on traffic in progress, one per sandbox
        self.evictor = Evictor(self)
        self.node_id = socket.gethostname()
        self.maxima = sandbox_maxima(settings)
        self.admission = Admission(settings)

    # ---- service lifetime -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.recover()
        self._expiry_task = asyncio.create_task(self._expiry_loop(), name="sandbox-expiry")
        self.evictor.start()

    async def close(self) -> None:
        await self.evictor.close()
        if self._expiry_task:
            self._expiry_task.cancel()
            await asyncio.gather(self._expiry_task, return_exceptions=True)
        if self._kill_tasks:
            await asyncio.gather(*self._kill_tasks, return_exceptions=True)

    def _lock(self, sid: str) -> asyncio.Lock:
        lock = self._locks.get(sid)
        if lock is None:
            lock = self._locks[sid] = asyncio.Lock()
        return lock

    # ---- reads ------------------------------------------------------------------------------------

    def get(self, sid: str, team: str | None = None) -> Sandbox:
        """`team`: the caller's team (None: the operator's, every team); another team's sandbox is a 404."""
        with self.store.tx() as s:
            row = s.get(SandboxRow, sid)
            if row is None or row.status == KILLED or team not in (None, row.team_id):
                raise NotFound(f"sandbox {sid} not found", code="sandbox_not_found")
            return _to_model(row)

    def team_of(self, sid: str) -> str | None:
        """The sandbox's team, ended or not (event streams filter on it); None if there is no such sandbox."""
        with self.store.tx() as s:
            row = s.get(SandboxRow, sid)
            return row.team_id if row is not None else None

    def list(self, *, status: str | None = None, region: str | None = None, template: str | None = None,
             limit: int = 100, cursor: str | None = None, team: str | None = None,
             where: Callable[[Sandbox], bool] | None = None) -> tuple[list[Sandbox], str | None]:
        """A page of sandboxes, newest first. `where` filters before the page is cut (a caller's filter the
        store cannot express, as E2B's metadata and states): a page holds `limit` matches whenever that many
        exist after the cursor, and the next cursor follows the last one returned."""
        if status is not None and status not in LIVE_STATES:
            raise Invalid(f"unknown status {status!r}; use one of {', '.join(LIVE_STATES)}", code="invalid_status")
        q = select(SandboxRow)
        q = q.where(SandboxRow.status == status) if status else q.where(SandboxRow.status != KILLED)
        if team is not None:
            q = q.where(SandboxRow.team_id == team)
        if region:
            q = q.where(SandboxRow.region == region)
        if template:
            q = q.where(or_(SandboxRow.template_id == template, SandboxRow.template_name == template))
        q = q.order_by(SandboxRow.created_at.desc(), SandboxRow.id.desc())
        batch = limit + 1 if where is None else max(limit + 1, 200)
        found: list[tuple[SandboxRow, Sandbox]] = []
        after = decode_cursor(cursor) if cursor else None
        with self.store.tx() as s:
            while len(found) <= limit:
                page = q
                if after is not None:
                    ts, sid = after
                    page = q.where(or_(SandboxRow.created_at < ts, and_(SandboxRow.created_at == ts, SandboxRow.id < sid)))
                rows = list(s.scalars(page.limit(batch)))
                for r in rows:
                    m = _to_model(r)
                    if where is None or where(m):
                        found.append((r, m))
                if len(rows) < batch:
                    break
                after = (rows[-1].created_at, rows[-1].id)
        more = len(found) > limit
        found = found[:limit]
        nxt = encode_cursor(found[-1][0].created_at, found[-1][0].id) if more else None
        return [m for _, m in found], nxt

    def count_live(self) -> int:
        with self.store.tx() as s:
            return _usage(s)[0]

    def uses_template(self, template_id: str) -> int:
        with self.store.tx() as s:
            return s.scalar(select(func.count()).select_from(SandboxRow).where(
                SandboxRow.template_id == template_id, SandboxRow.status != KILLED)) or 0

    # ---- create -----------------------------------------------------------------------------------

    async def create(self, req: CreateRequest, api_key_id: str | None = None, team_id: str = DEFAULT_TEAM_ID
                     ) -> tuple[Sandbox, str, datetime]:
        ref = req.template_id or req.template_name
        if not ref:
            raise Invalid("template_id or template_name is required", code="missing_template")
        # The sandbox's team must be allowed the template: its own, a built-in, or one another team published.
        template = self.catalog.get(ref, team_id)
        if template.status == "pending" and template.is_public:
            self.catalog.sync_builtins()  # `sandboxd setup` may have built it since we started
            template = self.catalog.get(ref, team_id)
        if template.status != "active":
            raise Conflict(f"template {template.name} is {template.status}, not active", code="template_not_active")
        vcpu = float(req.vcpu if req.vcpu is not None else template.vcpu)
        memory_mb = req.memory_mb if req.memory_mb is not None else template.memory_mb
        disk_mb = req.disk_mb if req.disk_mb is not None else template.disk_gb * 1024
        asked = (req.vcpu, req.memory_mb, req.disk_mb) != (None, None, None)
        # A template built under higher maxima than today's is refused here too.
        check_maxima(self.maxima, vcpu=vcpu, memory_mb=memory_mb, disk_mb=disk_mb,
                     names={"vcpu": "vcpu", "memory": "memory_mb", "disk": "disk_mb"},
                     what="this sandbox" if asked else f"template {template.name}")
        timeout = req.timeout_seconds if req.timeout_seconds is not None else self.settings.default_timeout_seconds
        internet, egress = self._egress_at_create(req)
        memory_from = req.memory_from if req.memory_from is not None else self._snapshot_memory(template)
        # Check capacity and insert the row in one transaction with no await in between: the event loop makes
        # this atomic in-process.
        claimed = None
        try:
            with self.store.tx() as s:
                quotas.check_create(s, team_id, vcpu=vcpu, memory_mb=memory_mb, disk_mb=disk_mb, now=_now())
                require_volumes(s, req.volume_mounts)  # none deleted since the request named them
                live, committed = _usage(s)
                if live >= self.settings.max_sandboxes:
                    raise CapacityExceeded(
                        f"sandbox capacity reached ({self.settings.max_sandboxes}); retry later",
                        details={"retry_after_seconds": 5, "limit": self.settings.max_sandboxes},
                    )
                # A warm-pool member's never-shown id becomes the sandbox id: container, dirs and events share it.
                # A member's disk is the template's size: one of another size would be discarded on take().
                # A member has no volumes mounted: a sandbox with some starts cold.
                poolable = disk_mb == template.disk_gb * 1024 and not req.volume_mounts and memory_from is None
                claimed = self.pool.claim(template, internet) if self.pool and poolable else None
                # After the claim: a claimed member has left the pool's commitment; this sandbox's is added.
                self.admission.admit(self._committed(committed), memory_mb=memory_mb, disk_mb=disk_mb)
                sid = claimed or "sb" + secrets.token_hex(9)
                now = _now()
                row = SandboxRow(
                    id=sid, status=CREATING, template_id=template.id, template_name=template.name,
                    region=req.region or "local", node_id=self.node_id, vcpu=vcpu,
                    memory_mb=memory_mb, disk_mb=disk_mb,
                    internet_access=internet, env_vars=dict(req.env_vars),
                    metadata_=dict(req.metadata), timeout_seconds=timeout, expires_at=None, created_at=now,
                    started_at=None, api_key_id=api_key_id, team_id=team_id, token_version=1,
                    public_traffic=req.public_traffic, egress=egress.to_dict() if egress is not None else None,
                    on_timeout=req.on_timeout, auto_resume=req.auto_resume,
                    volume_mounts=[m.to_dict() for m in req.volume_mounts] or None,
                )
                s.add(row)
        except BaseException:
            if claimed and self.pool is not None:  # the row was not stored (a value the database refused): the member is still unused
                self.pool.unclaim(claimed)
            raise
        async with self._lock(sid):
            try:
                async with self._create_gate:
                    rt = await self._provision(sid, template, row, memory_from)
            except BaseException as exc:
                await self.abandon(sid)
                if isinstance(exc, SandboxdError) or not isinstance(exc, Exception):
                    raise
                raise RuntimeFailure(f"could not start sandbox: {exc}") from exc
            started = _now()
            expires = started + timedelta(seconds=timeout)
            sb = self._set(sid, {"status": RUNNING, "started_at": started, "expires_at": expires}, ev.CREATED,
                           create_seconds=round((started - now).total_seconds(), 4))
            self.routes.put(sid, SandboxRoute(rt.agent_socket, RUNNING, 1, req.public_traffic))
            self._expiry[sid] = expires
        self.signer.born(sid)
        token, token_exp = self.signer.issue(sid, sb.token_version)
        return sb, token, token_exp

    def _snapshot_memory(self, template: Template) -> Any:
        """A snapshot's processes and memory, where it kept them and this host can restore them: its sandboxes
        go on from them instead of booting (docs/snapshots.md)."""
        if template.category != SNAPSHOT or not self.backend.memory_snapshots():
            return None
        images = snapshot_memory(self.settings.data_dir, template.id)
        return images if images.is_dir() else None

    def record(self, sid: str, etype: str, **data: Any) -> None:
        """Record an event about the sandbox (eventData: data) without changing it."""
        self._set(sid, {}, etype, **data)

    def _egress_at_create(self, req: CreateRequest) -> tuple[bool, EgressPolicy | None]:
        """(internet access, policy) of a new sandbox. Rules imply internet access unless it is refused; refused
        with destinations allowed, it is E2B's "deny all but these" (docs/network.md)."""
        egress, internet = req.egress, req.internet_access
        if egress is None or egress.empty:
            return bool(internet), egress
        if not self.backend.capabilities.network:
            raise NotSupported(f"the {self.backend.capabilities.name} backend cannot enforce egress rules",
                               code="egress_not_supported")
        if internet is False:
            if not egress.allow_out:
                return False, egress
            if ALL_TRAFFIC not in egress.deny_out:
                egress = EgressPolicy(egress.allow_out, egress.deny_out + (ALL_TRAFFIC,), egress.dns_servers)
        return True, egress

    def room_for(self, res: Resources) -> bool:
        """Whether the host could admit a sandbox with these limits now (the warm pool asks before a fill)."""
        with self.store.tx() as s:
            committed = _usage(s)[1]
        return self.admission.room_for(self._committed(committed), memory_mb=res.memory_mb, disk_mb=res.disk_mb)

    def _committed(self, rows: Commitment) -> Commitment:
        pooled = self.pool.committed() if self.pool is not None else Commitment()
        return Commitment(rows.memory_mb + pooled.memory_mb, rows.disk_mb + pooled.disk_mb)

    async def _provision(self, sid: str, template: Template, row: SandboxRow, memory_from: Any = None) -> RuntimeSandbox:
        image = await self.catalog.image(template)
        spec = SandboxSpec(
            id=sid, image=image,
            resources=Resources(vcpu=row.vcpu, memory_mb=row.memory_mb, disk_mb=row.disk_mb,
                                pids=self.settings.default_pids),
            env={**image.env, **row.env_vars}, internet_access=row.internet_access, hostname=sid,
            egress=EgressPolicy.from_dict(row.egress).runtime() if row.egress and row.internet_access else None,
            volumes=tuple((volume_dir(self.settings.data_dir, m["volume_id"]), m["path"])
                          for m in row.volume_mounts or ()),
        )
        if memory_from is not None:  # its parent's processes go on in it: no start command to run again
            return await self.backend.create(spec, memory=memory_from)
        if self.pool is not None:
            rt = await self.pool.take(template, spec)
            if rt is not None:
                await run_start(rt.agent_socket, image)
                return rt
        with self.pool.cold_start() if self.pool is not None else contextlib.nullcontext():
            rt = await self.backend.create(spec)
        await run_start(rt.agent_socket, image)  # the template's start command and ready check, if any
        return rt

    async def abandon(self, sid: str) -> None:
        """A create that failed half-way leaves nothing behind: no processes, no live row."""
        try:
            await asyncio.shield(self.backend.destroy(sid))
        except Exception:
            log.exception("cleanup of half-created sandbox %s failed", sid)
        with self.store.tx() as s:
            r = s.get(SandboxRow, sid)
            if r is not None:
                r.status, r.kill_reason, r.ended_at = KILLED, REASON_ERROR, _now()

    # ---- transitions ------------------------------------------------------------------------------

    def _require(self, sb: Sandbox, allowed: tuple[str, ...], action: str) -> None:
        if sb.status not in allowed:
            raise Conflict(
                f"cannot {action} a sandbox that is {sb.status}",
                code="invalid_state_transition",
                details={"status": sb.status, "action": action, "allowed_from": list(allowed)},
            )

    def _set(self, sid: str, values: dict[str, Any], etype: str | None = None, about: Sandbox | None = None,
             **extra: Any) -> Sandbox:
        """Update the sandbox's row; with `etype`, record that event (about `about`, else the updated sandbox)
        in the same transaction, and publish it once committed."""
        event = None
        with self.store.tx() as s:
            r = s.get(SandboxRow, sid)
            if r is None:
                raise NotFound(f"sandbox {sid} not found", code="sandbox_not_found")
            for k, v in values.items():
                setattr(r, k, v)
            sb = _to_model(r)
            if etype is not None:
                event = self.events.add(s, self._event(etype, about or sb, **extra))
        if event is not None:
            self.events.bus.publish(event)
        route = self.routes.get(sid)
        if route is not None and not (route.status == EVICTED and sb.status == RUNNING):  # still on disk
            route.status = sb.status
        return sb

    async def kill(self, sid: str, reason: str = REASON_USER, *, team: str | None = None) -> Sandbox:
        """`team` (here and in the calls below): the caller's, read with the sandbox in one go; another team's
        sandbox is a 404 as if missing."""
        async with self._lock(sid):
            sb = self.get(sid, team)
            before = sb
            route = self.routes.drop(sid)  # revoke traffic first: nothing reaches a sandbox being destroyed
            self._expiry.pop(sid, None)
            try:
                # Returns once nothing in it runs; mounts and files are released in the background.
                await self.backend.destroy(sid, background=True)
            except Exception as exc:
                if route is not None:  # still alive: keep routing to it, a retry of the kill may succeed
                    self.routes.put(sid, route)
                if before.expires_at:
                    self._expiry[sid] = before.expires_at
                if isinstance(exc, SandboxdError):
                    raise
                raise RuntimeFailure(f"could not destroy sandbox {sid}: {exc}") from exc
            sb = self._set(sid, {"status": KILLED, "kill_reason": reason, "ended_at": _now(),
                                 "token_version": before.token_version + 1},
                           ev.KILLED, about=before, kill_reason=reason, execution=self._execution(before))
        self._locks.pop(sid, None)
        if route is not None:
            self.routes.gone(sid, route)
        return sb

    async def pause(self, sid: str, *, idempotent: bool = False, team: str | None = None) -> Sandbox:
        async with self._lock(sid):
            sb = self.get(sid, team)
            if idempotent and sb.status == PAUSED:
                return sb
            self._require(sb, (RUNNING,), "pause")
            route = self.routes.get(sid)
            if route is not None and route.status == EVICTED:  # already on disk: it only becomes paused
                where: dict[str, Any] = {"memory": True, "on_disk": True, "evicted": True}
            else:
                where = await self._pause_backend(sid)
            new = self._set(sid, {"status": PAUSED}, ev.PAUSED, execution=self._execution(sb), pause=where)
            return new

    async def _pause_backend(self, sid: str) -> dict[str, Any]:
        """To disk when the operator wants it and the backend can (docs/snapshots.md), else frozen in RAM: what
        the paused event says (`memory`: the processes are kept; `on_disk`: where)."""
        reason = None
        if self.settings.pause_to == "disk":
            try:
                cp = await self.backend.checkpoint(sid)
                return {"memory": True, "on_disk": True, "size_bytes": cp.size_bytes, "seconds": round(cp.seconds, 3)}
            except NotSupported as exc:  # no usable CRIU here: the event says so
                reason = exc.message
            except RuntimeFailure as exc:  # the sandbox runs on as it was: freeze it instead
                reason = exc.message
                log.warning("sandbox %s: pause to disk failed (%s); frozen in RAM instead", sid, reason)
        await self._call(self.backend.pause, sid)
        return {"memory": True, "on_disk": False, **({"reason": reason} if reason else {})}

    async def settle(self, sid: str) -> None:
        """Wait for what is being done to the sandbox (a pause at its timeout writing it to disk) to finish: its
        status is then the outcome, not what it was before."""
        async with self._lock(sid):
            pass

    async def resume(self, sid: str, *, idempotent: bool = False, team: str | None = None) -> Sandbox:
        async with self._lock(sid):
            sb = self.get(sid, team)
            if idempotent and sb.status == RUNNING:
                return sb
            self._require(sb, (PAUSED,), "resume")
            restored = await self._call(self.backend.resume, sid)
            new = self._set(sid, {"status": RUNNING, "started_at": _now()}, ev.RESUMED,
                            resume={"from_disk": restored is not None,
                                    **({"seconds": round(restored, 3)} if restored is not None else {})})
            return new

    async def stop(self, sid: str, *, team: str | None = None) -> Sandbox:
        async with self._lock(sid):
            sb = self.get(sid, team)
            self._require(sb, (RUNNING, PAUSED), "stop")
            await self._call(self.backend.stop, sid)
            new = self._set(sid, {"status": STOPPED}, ev.UPDATED, execution=self._execution(sb))
            return new

    async def start_sandbox(self, sid: str, *, team: str | None = None) -> Sandbox:
        async with self._lock(sid):
            sb = self.get(sid, team)
            self._require(sb, (STOPPED,), "start")
            with self.store.tx() as s:  # a stopped sandbox holds its disk but no memory: it needs room again
                committed = _usage(s)[1]
                row = s.get(SandboxRow, sid)
                team = row.team_id if row is not None else None
                quotas.check_start(s, team, vcpu=sb.vcpu, memory_mb=sb.memory_mb, starting=self._started_by(team))
            # Starts under way hold memory their stopped rows do not show yet: without them, two starts at
            # once could each fit alone and overcommit the host together.
            starting = sum(mem for _, _, mem in self._starting.values())
            self.admission.admit(self._committed(Commitment(committed.memory_mb + starting, committed.disk_mb)),
                                 memory_mb=sb.memory_mb, disk_mb=0)
            self._starting[sid] = (team, sb.vcpu, sb.memory_mb)  # its row says stopped until it runs
            try:
                rt = await self._call(self.backend.start, sid)
                await rerun_start(self, sid, sb.template_id, rt)
                self.routes.put(sid, SandboxRoute(rt.agent_socket, RUNNING, sb.token_version, sb.public_traffic))
                new = self._set(sid, {"status": RUNNING, "started_at": _now()}, ev.UPDATED)
            finally:
                self._starting.pop(sid, None)
            return new

    def _started_by(self, team: str | None) -> quotas.Usage:
        """The vCPU and memory of the team's starts under way."""
        mine = [(vcpu, mem) for t, vcpu, mem in self._starting.values() if t == team]
        return quotas.Usage(vcpu=sum(v for v, _ in mine), memory_mb=sum(m for _, m in mine))

    async def set_timeout(self, sid: str, seconds: int, *, team: str | None = None) -> Sandbox:
        if seconds < 1:
            raise Invalid("timeout_seconds must be at least 1", code="invalid_timeout")
        async with self._lock(sid):
            self.get(sid, team)
            expires = _now() + timedelta(seconds=seconds)
            new = self._set(sid, {"timeout_seconds": seconds, "expires_at": expires}, ev.UPDATED,
                            set_timeout=iso(expires))
            self._expiry[sid] = expires
            return new

    async def set_egress(self, sid: str, policy: EgressPolicy, team: str | None = None) -> Sandbox:
        """Replace the sandbox's egress policy: its new connections meet it once this returns."""
        self.get(sid, team)  # a sandbox the caller cannot see is a 404 before anything else
        if not self.backend.capabilities.network:
            raise NotSupported(f"the {self.backend.capabilities.name} backend cannot enforce egress rules",
                               code="egress_not_supported")
        async with self._lock(sid):
            sb = self.get(sid, team)
            if not sb.internet_access and policy.allow_out:
                raise Conflict(f"sandbox {sid} was created without internet access; egress rules cannot open it",
                               code="no_internet_access", details={"allow_out": list(policy.allow_out)})
            if sb.internet_access:
                try:
                    await self.backend.set_egress(sid, policy.runtime())
                except SandboxdError:
                    raise
                except Exception as exc:
                    raise RuntimeFailure(f"set_egress failed for {sid}: {exc}") from exc
            return self._set(sid, {"egress": policy.to_dict()}, ev.UPDATED, network=policy.shown())

    async def egress_denied(self, sid: str, team: str | None = None) -> EgressDenied:
        sb = self.get(sid, team)
        if not self.backend.capabilities.network:
            raise NotSupported(f"the {self.backend.capabilities.name} backend counts no egress",
                               code="egress_not_supported")
        if not sb.internet_access:
            return EgressDenied()
        return await self.backend.egress_denied(sid)

    def envd_token(self, sb: Sandbox) -> str:
        return self.signer.envd_token(sb.id, sb.token_version, sb.created_at)

    def refresh_token(self, sid: str) -> tuple[str, datetime]:
        sb = self.get(sid)
        return self.signer.refresh(sid, sb.token_version)  # the previous token ends after a grace period

    def another_token(self, sid: str) -> tuple[str, datetime]:
        """A token for one more client of the sandbox (the dashboard's terminal), revoking none."""
        return self.signer.another(sid, self.get(sid).token_version)

    async def _call(self, fn, sid: str):
        try:
            return await fn(sid)
        except SandboxdError:
            raise
        except Exception as exc:
            raise RuntimeFailure(f"{fn.__name__} failed for {sid}: {exc}") from exc

    # ---- events -----------------------------------------------------------------------------------

    @staticmethod
    def _execution(sb: Sandbox) -> dict[str, Any]:
        started = sb.started_at or sb.created_at
        return {
            "started_at": iso(started),
            "vcpu_count": max(1, round(sb.vcpu)),
            "memory_mb": sb.memory_mb,
            "execution_time": int((_now() - started).total_seconds() * 1000),
        }

    def _event(self, etype: str, sb: Sandbox, **extra: Any) -> ev.Event:
        status = {ev.KILLED: KILLED}.get(etype, sb.status)
        data = {"status": status, "template_id": sb.template_id, "template_name": sb.template_name,
                "sandbox_metadata": sb.metadata, **extra}
        return ev.Event(type=etype, sandbox_id=sb.id, data=data, template_id=sb.template_id)

    # ---- timeouts ---------------------------------------------------------------------------------

    async def _expiry_loop(self) -> None:
        # A short fixed tick keeps "killed within 1 s of expires_at" without a timer per sandbox;
        # every WATCH_EVERY ticks, sandboxes that died on their own are found and recorded.
        from sandboxd.core.reconcile import watch_once

        tick = 0
        while True:
            tick += 1
            if tick % WATCH_EVERY == 0 and (self._watch is None or self._watch.done()):
                self._watch = asyncio.create_task(watch_once(self))
                self._kill_tasks.add(self._watch)
                self._watch.add_done_callback(self._kill_tasks.discard)
            now = _now()
            for sid, when in list(self._expiry.items()):
                if when <= now:
                    self._expiry.pop(sid, None)
                    task = asyncio.create_task(self._expire(sid))
                    self._kill_tasks.add(task)
                    task.add_done_callback(self._kill_tasks.discard)
            await asyncio.sleep(0.2)

    async def _expire(self, sid: str) -> None:
        try:
            sb = self.get(sid)
            if sb.expires_at and sb.expires_at > _now():  # moved by PUT timeout meanwhile
                self._expiry[sid] = sb.expires_at
                return
            if sb.status == RUNNING and sb.on_timeout != ON_TIMEOUT_KILL:
                await self._pause_at_timeout(sb)
            else:  # a sandbox paused or stopped meanwhile ends at its time, whatever its timeout does
                await self.kill(sid, REASON_TIMEOUT)
        except NotFound:
            pass
        except Exception:
            log.exception("expiring sandbox %s failed; retrying", sid)
            self._expiry[sid] = _now() + timedelta(seconds=1)

    async def _pause_at_timeout(self, sb: Sandbox) -> None:
        """Pause instead of kill. The paused sandbox still ends: it is killed default_timeout_seconds later
        unless resumed first (a resume sets its timeout again)."""
        await (self.pause(sb.id) if sb.on_timeout == ON_TIMEOUT_PAUSE else self.stop(sb.id))
        async with self._lock(sb.id):
            if self.get(sb.id).status not in (PAUSED, STOPPED):
                return  # resumed meanwhile, with its own timeout
            end = _now() + timedelta(seconds=self.settings.default_timeout_seconds)
            self._set(sb.id, {"expires_at": end})
            self._expiry[sb.id] = end

    async def resume_on_traffic(self, sid: str) -> bool:
        """A request reached the paused sandbox: resume it if it was created to resume on traffic; whether it
        runs now. Concurrent requests share one resume, which a request that gives up does not cancel."""
        task = self._waking.get(sid)
        if task is None:
            task = self._waking[sid] = asyncio.create_task(self._resume_on_traffic(sid))
            task.add_done_callback(lambda _: self._waking.pop(sid, None))
        return await asyncio.shield(task)

    async def evict(self, sid: str) -> bool:
        """Write an idle running sandbox to disk (core/eviction.py); it stays running to its clients."""
        async with self._lock(sid):
            route = self.routes.get(sid)
            if route is None or route.status != RUNNING or self.get(sid).status != RUNNING:
                return False
            cp = await self.backend.checkpoint(sid, compress=True)
            self._set(sid, {}, ev.CHECKPOINTED, evicted=True,
                      checkpoint={"size_bytes": cp.size_bytes, "seconds": round(cp.seconds, 3)})
            self.routes.set_status(sid, EVICTED)
            return True

    async def _wake(self, sid: str) -> bool:
        """Bring an evicted sandbox back for the request that wants it."""
        async with self._lock(sid):
            route = self.routes.get(sid)
            if route is None or route.status != EVICTED:
                return route is not None and route.status == RUNNING
            seconds = await self.backend.resume(sid)
            self.routes.set_status(sid, RUNNING)
            self._set(sid, {}, ev.RESUMED, resume={"from_disk": True, "evicted": True,
                                                    "seconds": round(seconds or 0.0, 3)})
            return True

    async def _resume_on_traffic(self, sid: str) -> bool:
        try:
            route = self.routes.get(sid)
            if route is not None and route.status == EVICTED:
                return await self._wake(sid)
            sb = self.get(sid)
            if sb.status != PAUSED or not sb.auto_resume:
                return sb.status == RUNNING
            await self.resume(sid, idempotent=True)
            # Its timeout starts again, as on a connect.
            await self.set_timeout(sid, sb.timeout_seconds or self.settings.default_timeout_seconds)
            return True
        except SandboxdError:  # killed, stopped or resumed by someone else meanwhile: the caller looks again
            return False
        except Exception:
            log.exception("resuming sandbox %s on traffic failed", sid)
            return False

    # ---- restart safety ---------------------------------------------------------------------------

    async def recover(self) -> None:
        """Make the store and the runtime agree after a restart (or a crash mid-create)."""
        from sandboxd.core.reconcile import reconcile

        await reconcile(self)

    def live_sandboxes(self) -> builtins.list[Sandbox]:  # `list` here is the method above
        with self.store.tx() as s:
            return [_to_model(r) for r in s.scalars(select(SandboxRow).where(SandboxRow.status != KILLED))]

    def busy(self, sid: str) -> bool:
        """A transition of the sandbox is in progress (it owns the sandbox until it ends)."""
        return self._lock(sid).locked()

    def mark_status(self, sid: str, status: str) -> Sandbox:
        return self._set(sid, {"status": status})

    def mark_lost(self, sb: Sandbox) -> None:
        """The runtime no longer has the sandbox: killed, reason node_lost, with its event."""
        self._set(sb.id, {"status": KILLED, "kill_reason": REASON_NODE_LOST, "ended_at": _now(),
                          "token_version": sb.token_version + 1},
                  ev.KILLED, about=sb, kill_reason=REASON_NODE_LOST, execution=self._execution(sb))

    def track(self, sb: Sandbox, rt: RuntimeSandbox | None) -> None:
        """Serve the sandbox again (its route, when it runs) and expire it at its time."""
        if rt is not None:
            self.routes.put(sb.id, SandboxRoute(rt.agent_socket, sb.status, sb.token_version, sb.public_traffic))
        if sb.expires_at:
            self._expiry[sb.id] = sb.expires_at
