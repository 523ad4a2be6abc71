"""Snapshots: a sandbox's filesystem saved as a template that new sandboxes start from (E2B's
`create_snapshot`, `list_snapshots`, `delete_snapshot`; docs/e2b.md "Snapshots").

A snapshot is a template of category `snapshot`: the image of the sandbox's template plus one layer of what
the sandbox changed (templates/snapshot.py). The sandbox is frozen while its changes are copied and runs on
after. By default (E2B's `mode="full"`, `memory` true) a snapshot also keeps the sandbox's processes and memory
at that instant, where the backend can take them (docs/snapshots.md): CRIU images under
`<data dir>/snapshots/<template id>/images`, and every sandbox made from it goes on from there instead of
booting. With `memory` false (`mode="filesystem"`), or where they cannot be taken, its sandboxes boot fresh on
its files. The images go with the snapshot's template (deleted, or given a new image under the same name).

A fork is a snapshot nobody names (category `fork`, listed nowhere) and sandboxes started from it at once;
the snapshot is removed with the last of them (a sweep on every kill, and one at start for a restart). Where the
backend can (docs/snapshots.md), a fork also takes the parent's processes and memory at the instant its files
are copied, and each child goes on from there instead of booting; where it cannot, the children boot on the
files, as before.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Awaitable, Callable

from sandboxd.core import events as ev
from sandboxd.core.catalog import FORK, SNAPSHOT, TEMPLATE_DELETED, CatalogService, snapshot_memory
from sandboxd.core.events import EventBus
from sandboxd.core.egress import EgressPolicy
from sandboxd.core.lifecycle import CreateRequest, LifecycleService
from sandboxd.core.models import Sandbox, Template
from sandboxd.core.volumes import Mount
from sandboxd.core.store.tables import DEFAULT_TEAM_ID
from sandboxd.errors import Invalid, NotSupported, RuntimeFailure, SandboxdError
from sandboxd.runtime.base import Backend
from sandboxd.templates.steps import check_name

from sandboxd.core.tags import DEFAULT_TAG

log = logging.getLogger("sandboxd.snapshots")
MAX_FORKS = 20  # sandboxes per fork call


def snapshot_names(t: Template) -> list[str]:
    return [f"{t.name}:{DEFAULT_TAG}"]


def source_sandbox(t: Template) -> str | None:
    return next((tag.split(":", 1)[1] for tag in t.tags or [] if tag.startswith("sandbox:")), None)


class SnapshotService:
    def __init__(self, catalog: CatalogService, lifecycle: LifecycleService, backend: Backend, bus: EventBus):
        self.catalog, self.lifecycle, self.backend, self.bus = catalog, lifecycle, backend, bus
        self._sweeper: asyncio.Task[None] | None = None
        self._forking: set[str] = set()  # fork snapshots whose sandboxes are still being made: not swept
        # Ids of the fork snapshots that exist: a kill of a sandbox made from another template (nearly every
        # kill) sweeps nothing, and costs no query.
        self._forks: set[str] = set()

    async def start(self) -> None:
        await self._sweep()
        await asyncio.to_thread(self._sweep_memory)
        self._sweeper = asyncio.create_task(self._sweep_on_kills(self.bus.subscribe()))

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)

    async def create(self, sandbox_id: str, name: str | None = None, *, team: str | None = None,
                     memory: bool = True) -> Template:
        """team: the caller's (None: the operator's, every team); another team's sandbox is a 404. memory: keep
        its processes and memory too, where the backend can."""
        sb = self.lifecycle.get(sandbox_id, team)
        held: list[Path] = []
        try:
            t = await self._save(sb, self._name(name), SNAPSHOT, export=self._memory_export(sb, held) if memory else None)
            kept = await asyncio.to_thread(self._keep_memory, t.id, held[0] if held else None)
        finally:
            for images in held:
                shutil.rmtree(images.parent, ignore_errors=True)
        self.lifecycle.record(sb.id, ev.CHECKPOINTED, snapshot={"snapshot_id": t.id, "memory": kept})
        return t

    def _keep_memory(self, template_id: str, images: Path | None) -> bool:
        """Put images where sandboxes of the snapshot find them, in place of any it had; None: it has none now."""
        dest = snapshot_memory(self.lifecycle.settings.data_dir, template_id)
        if images is None:
            shutil.rmtree(dest.parent, ignore_errors=True)
            return False
        dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        old = dest.with_name(f"images.old-{secrets.token_hex(4)}")
        if dest.exists():
            dest.rename(old)
        images.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
        return True

    async def fork(self, sandbox_id: str, count: int, timeout_seconds: int, api_key_id: str | None = None, *,
                   team: str | None = None, team_id: str = DEFAULT_TEAM_ID) -> list[Sandbox | SandboxdError]:
        """count sandboxes of team_id on a copy of sandbox_id's files, each with its env, metadata and network
        settings; a create that fails is its error in the list, as E2B answers. team: as for create()."""
        if not 1 <= count <= MAX_FORKS:
            raise Invalid(f"count must be 1..{MAX_FORKS}", code="invalid_count")
        sb = self.lifecycle.get(sandbox_id, team)
        name = f"fork-{secrets.token_hex(8)}"
        self._forking.add(name)
        out: list[Sandbox | SandboxdError] = []
        try:
            memory: list[Path] = []
            t = await self._save(sb, name, FORK, export=self._memory_export(sb, memory))
            self._forks.add(t.id)
            req = CreateRequest(template_id=t.id, timeout_seconds=timeout_seconds, internet_access=sb.internet_access,
                                env_vars=dict(sb.env_vars), metadata=dict(sb.metadata), public_traffic=sb.public_traffic,
                                egress=EgressPolicy.from_dict(sb.egress) if sb.egress is not None else None,
                                volume_mounts=[Mount(**m) for m in sb.volume_mounts],  # the same volumes, shared
                                memory_from=memory[0] if memory else None)
            made = await asyncio.gather(*(self.lifecycle.create(req, api_key_id, team_id=team_id)
                                          for _ in range(count)), return_exceptions=True)
            for r in made:
                if isinstance(r, BaseException) and not isinstance(r, SandboxdError):
                    raise r
                out.append(r if isinstance(r, SandboxdError) else r[0])
        finally:
            self._forking.discard(name)
            for images in memory:
                shutil.rmtree(images.parent, ignore_errors=True)  # each child copied them
            await self._sweep()  # every create failed: nothing holds the copy
        self.lifecycle.record(sb.id, ev.CHECKPOINTED, fork={"count": count, "memory": bool(memory)})
        return out

    def _memory_export(self, sb: Sandbox, memory: list[Path]) -> Callable[[Path], Awaitable[None]]:
        """A copy of the sandbox's files, with its processes and memory where the backend can take them (the
        images' directory appended to `memory`); where it cannot, the files alone."""
        async def export(dest: Path) -> None:
            if self.backend.memory_snapshots():
                work = Path(tempfile.mkdtemp(prefix="fork-", dir=self._forks_dir()))
                try:
                    await self.backend.fork_memory(sb.id, dest, work / "images")
                    memory.append(work / "images")
                    return
                except (NotSupported, RuntimeFailure) as exc:
                    log.warning("the copy of %s takes its files only: %s", sb.id, exc.message)
                    shutil.rmtree(work, ignore_errors=True)
                    for p in dest.iterdir():
                        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            await self.backend.export_changes(sb.id, dest)
        return export

    def _forks_dir(self) -> Path:
        d = Path(self.lifecycle.settings.data_dir) / "forks"
        d.mkdir(mode=0o700, exist_ok=True)
        return d

    def _name(self, name: str | None) -> str:
        name = (name or "").strip()
        if name.endswith(f":{DEFAULT_TAG}"):
            name = name[: -len(DEFAULT_TAG) - 1]
        if name and ":" in name:
            raise Invalid(f"a snapshot's tag is always {DEFAULT_TAG!r}: name it without one", code="invalid_name")
        return check_name(name) if name else f"snapshot-{secrets.token_hex(6)}"

    async def _save(self, sb: Sandbox, name: str, category: str,
                    export: Callable[[Path], Awaitable[None]] | None = None) -> Template:
        template = self.catalog.get(sb.template_id or sb.template_name or "")  # it runs from it: no scope
        parent = await self.catalog.image(template)
        await self.catalog.source.snapshot(name, parent, export or (lambda dest: self.backend.export_changes(sb.id, dest)),
                                           sb.id)
        return self.catalog.save_snapshot(name, sandbox_id=sb.id, vcpu=max(1, int(sb.vcpu)), memory_mb=sb.memory_mb,
                                          disk_gb=max(1, sb.disk_mb // 1024), team_id=sb.team_id or DEFAULT_TEAM_ID,
                                          category=category)

    def _sweep_memory(self) -> None:
        """Images of snapshots that no longer exist (deleted while the server was down)."""
        root = Path(self.lifecycle.settings.data_dir) / "snapshots"
        if not root.is_dir():
            return
        kept = {t.id for t in self.catalog.snapshots(SNAPSHOT)}
        for d in root.iterdir():
            if d.name not in kept:
                shutil.rmtree(d, ignore_errors=True)

    async def _sweep(self) -> None:
        forks = self.catalog.snapshots(FORK)
        self._forks = {t.id for t in forks}
        for t in forks:
            if t.name not in self._forking and not self.lifecycle.uses_template(t.id):
                try:
                    await self.catalog.remove(t.id, in_use=0)
                    self._forks.discard(t.id)
                except SandboxdError as exc:  # removed meanwhile by another sweep
                    log.debug("fork template %s: %s", t.name, exc)

    async def _sweep_on_kills(self, q: asyncio.Queue[ev.Event]) -> None:
        try:
            while True:
                event = await q.get()
                if event.type == ev.KILLED and event.template_id in self._forks:
                    try:
                        await self._sweep()
                    except Exception:
                        log.exception("removing the snapshots of ended forks failed")
                elif event.type == TEMPLATE_DELETED and event.template_id:
                    gone = snapshot_memory(self.lifecycle.settings.data_dir, event.template_id).parent
                    await asyncio.to_thread(shutil.rmtree, gone, True)
        finally:
            self.bus.unsubscribe(q)

    def list(self, *, sandbox_id: str | None = None, name: str | None = None, team: str | None = None
             ) -> list[Template]:
        """Newest first. name matches a snapshot's name, its id or its name:tag. team: the caller's (None: the
        operator's, every team); a snapshot is its source sandbox's team's."""
        found = self.catalog.snapshots(team=team)
        if sandbox_id:
            found = [t for t in found if source_sandbox(t) == sandbox_id]
        if name:
            found = [t for t in found if name in (t.name, t.id, *snapshot_names(t))]
        return found
