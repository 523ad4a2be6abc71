"""Templates as the control plane sees them: rows in the store, synced from the template image store.

Built-in templates come from a TemplateSource (sandboxd.templates for real backends); custom templates
are created by builds. Lookups accept a name or an id, as the HopX clients need.

Teams (docs/teams.md): a custom template is its team's. Another team sees it only once published, and then
only to start sandboxes from it; otherwise it answers exactly like a missing one. `team` arguments are the
caller's scope: None is the operator (or the platform itself), who sees every team's.
"""
from __future__ import annotations

import builtins
import secrets
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

from sqlalchemy import func, or_, select

from sandboxd.errors import Conflict, Forbidden, Invalid, NotFound, QuotaExceeded
from sandboxd.core.eventlog import EventLog
from sandboxd.core.events import Event
from sandboxd.core.models import Template
from sandboxd.core.store.db import Store
from sandboxd.core.store.tables import DEFAULT_TEAM_ID, BuildRow, TeamRow, TemplateRow, TemplateTagRow
from sandboxd.runtime.base import TemplateImage

# Built-ins listed only once their image exists (template_source.builtin_metadata).
CACHE_SECONDS = 2.0
SNAPSHOT = "snapshot"  # the category of templates made from a sandbox (snapshots)
FORK = "fork"  # a fork's own snapshot: listed nowhere, removed with the fork's last sandbox (core/snapshots.py)
OPTIONAL_BUILTINS = ("desktop", "tpl_desktop")
TEMPLATE_CREATED, TEMPLATE_UPDATED, TEMPLATE_DELETED = "template.created", "template.updated", "template.deleted"


def snapshot_memory(data_dir: Path, template_id: str) -> Path:
    """Where a snapshot's processes and memory are kept (CRIU images, docs/snapshots.md), when it has them."""
    return Path(data_dir) / "snapshots" / template_id / "images"


class TemplateSource(Protocol):
    def builtins(self) -> list[dict[str, Any]]:
        """Metadata of the built-in templates: name, display_name, description, category, language, ..."""

    async def image(self, name: str) -> TemplateImage:
        """The built image for a template name (raises NotFound when it is not built)."""

    async def snapshot(self, name: str, parent: TemplateImage, export: Callable[[Path], Awaitable[None]],
                       source: str) -> TemplateImage:
        """Save parent plus the changes export(dir) writes as the image of template name."""

    async def forget(self, name: str, free_layers: bool = True) -> list[str]:
        """Drop a deleted template's images and (free_layers) free the layers no other image or sandbox uses;
        the freed layers."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _model(r: TemplateRow) -> Template:
    return Template(
        id=r.id, name=r.name, display_name=r.display_name, description=r.description, category=r.category,
        language=r.language, is_public=r.is_public, status=r.status, build_id=r.build_id,
        error_message=r.error_message, vcpu=r.vcpu, memory_mb=r.memory_mb, disk_gb=r.disk_gb,
        features=list(r.features or []), tags=list(r.tags or []), created_at=r.created_at, updated_at=r.updated_at,
        team_id=r.team_id, published=bool(r.published),
    )


def team_templates(s, team_id: str) -> int:
    """How many templates a team has toward its `max_templates` (a fork's copy is none it made)."""
    return s.scalar(select(func.count()).select_from(TemplateRow).where(
        TemplateRow.team_id == team_id, or_(TemplateRow.category.is_(None), TemplateRow.category != FORK))) or 0


def visible(t: Template, team: str | None) -> bool:
    return team is None or t.team_id is None or t.team_id == team or t.published


class CatalogService:
    def __init__(self, store: Store, events: EventLog, source: TemplateSource):
        self.store = store
        self.events = events
        self.source = source
        # Every create looks its template up: remembered for CACHE_SECONDS, forgotten at once on any change
        # made through this process (another control plane's change shows within CACHE_SECONDS).
        self._cache: dict[str, tuple[float, Template]] = {}

    def _forget(self) -> None:
        self._cache.clear()

    def sync_builtins(self) -> None:
        self._forget()
        now = _now()
        with self.store.tx() as s:
            for meta in self.source.builtins():
                row = s.scalar(select(TemplateRow).where(TemplateRow.name == meta["name"]))
                if row is None:
                    row = TemplateRow(id="tpl_" + meta["name"].replace("-", "_"), name=meta["name"], created_at=now,
                                      is_public=True)
                    s.add(row)
                row.display_name = meta.get("display_name") or meta["name"]
                row.description = meta.get("description")
                row.category = meta.get("category")
                row.language = meta.get("language")
                row.status = meta.get("status", "active")
                row.vcpu = int(meta.get("vcpu", 1))
                row.memory_mb = int(meta.get("memory_mb", 1024))
                row.disk_gb = int(meta.get("disk_gb", 2))
                row.features = list(meta.get("features", []))
                row.tags = list(meta.get("tags", []))
                row.updated_at = now

    def get(self, id_or_name: str, team: str | None = None) -> Template:
        name, sep, tag = id_or_name.partition(":")
        if sep:
            return self._tagged(self.get(name, team), tag)
        found = self._get(id_or_name)
        if found is None and id_or_name in OPTIONAL_BUILTINS:
            self.sync_builtins()  # e.g. `sandboxd setup --desktop` built it after we started
            found = self._get(id_or_name)
        if found is None or not visible(found, team):
            raise NotFound(f"template {id_or_name} not found", code="template_not_found")
        return found

    def owned(self, id_or_name: str, team: str | None, manager: bool = True) -> Template:
        """The template, for a change to it: the caller's team's (or any, for the operator). A published
        template of another team is seen but not changed; a built-in is changed by no team. Deleting or
        publishing a template takes a team admin (manager); a snapshot, any key of its team."""
        t = self.get(id_or_name, team)
        if team is not None and t.team_id != team:
            if t.team_id is None:
                raise Invalid(f"{t.name} is a built-in template", code="template_is_builtin")
            raise Forbidden(f"template {t.name} belongs to another team", code="template_not_owned")
        if not manager and t.category not in (SNAPSHOT, FORK):
            raise Forbidden(f"changing template {t.name} needs a team admin API key", code="admin_required")
        return t

    def publish(self, id_or_name: str, public: bool, team: str | None, manager: bool = True) -> Template:
        t = self.owned(id_or_name, team, manager)
        if t.team_id is None:
            raise Invalid(f"{t.name} is a built-in template: every team's already", code="template_is_builtin")
        if t.category == FORK:
            raise NotFound(f"template {id_or_name} not found", code="template_not_found")
        self._forget()
        with self.store.tx() as s:
            row = s.get(TemplateRow, t.id)
            if row is None:
                raise NotFound(f"template {id_or_name} not found", code="template_not_found")
            row.published, row.updated_at = public, _now()
            t = _model(row)
        self._emit(TEMPLATE_UPDATED, t)
        return t

    def _tagged(self, t: Template, tag: str) -> Template:
        """The template as its build named `tag` made it (E2B's `name:tag`)."""
        with self.store.tx() as s:
            row = s.get(TemplateTagRow, (t.id, tag))
            build = s.get(BuildRow, row.build_id) if row is not None else None
            image = build.content_hash if build is not None else None
        if image is None:
            raise NotFound(f"template {t.name} has no tag {tag!r}", code="template_tag_not_found")
        return replace(t, image_ref=image)

    def _get(self, id_or_name: str) -> Template | None:
        hit = self._cache.get(id_or_name)
        if hit is not None and time.monotonic() < hit[0]:
            return hit[1]
        with self.store.tx() as s:
            row = s.get(TemplateRow, id_or_name) or s.scalar(select(TemplateRow).where(TemplateRow.name == id_or_name))
            found = _model(row) if row is not None else None
        if found is not None:
            if len(self._cache) > 1000:
                self._cache.clear()
            self._cache[id_or_name] = (time.monotonic() + CACHE_SECONDS, found)
        return found

    def find(self, name: str) -> Template | None:
        with self.store.tx() as s:
            row = s.scalar(select(TemplateRow).where(TemplateRow.name == name))
            return _model(row) if row is not None else None

    def list(self, *, category: str | None = None, language: str | None = None, team: str | None = None
             ) -> list[Template]:
        q = select(TemplateRow).where(or_(TemplateRow.category.is_(None), TemplateRow.category != FORK))
        if team is not None:
            q = q.where(or_(TemplateRow.team_id.is_(None), TemplateRow.team_id == team, TemplateRow.published))
        q = q.order_by(TemplateRow.is_public.desc(), TemplateRow.name)
        if category:
            q = q.where(TemplateRow.category == category)
        if language:
            q = q.where(or_(TemplateRow.language == language))
        with self.store.tx() as s:
            return [_model(r) for r in s.scalars(q)]

    async def image(self, template: Template) -> TemplateImage:
        return await self.source.image(template.image_ref or template.name)

    # ---- custom templates (builds) ------------------------------------------------------------------

    def begin_build(self, name: str, build_id: str, *, vcpu: int, memory_mb: int, disk_gb: int,
                    update: bool, team_id: str = DEFAULT_TEAM_ID, team: str | None = None) -> Template:
        """team_id: whose a new template is; team: the caller's scope, which must own an existing one."""
        return self._put(name, team_id, team, lambda r: f"template {name} exists; send update=true to rebuild it"
                         if not update and r.status == "active" else None,
                         status="building", build_id=build_id, error_message=None, vcpu=vcpu, memory_mb=memory_mb,
                         disk_gb=disk_gb)

    def reserve(self, name: str, *, vcpu: int, memory_mb: int, disk_gb: int, team_id: str = DEFAULT_TEAM_ID,
                team: str | None = None) -> Template:
        """The template a build was announced for: created `pending` if new (no image yet); an existing one
        is left as it is (it serves its current image until the build starts). team_id, team: as begin_build."""
        now = _now()
        self._forget()
        with self.store.tx() as s:
            row = self._custom_row(s, name, team)
            if row is not None:
                return _model(row)
            row = self._new_row(s, name, now, team_id)
            row.status, row.vcpu, row.memory_mb, row.disk_gb, row.updated_at = "pending", vcpu, memory_mb, disk_gb, now
            t = _model(row)
        self._emit(TEMPLATE_CREATED, t)
        return t

    def save_snapshot(self, name: str, *, sandbox_id: str, vcpu: int, memory_mb: int, disk_gb: int, team_id: str,
                      category: str = SNAPSHOT) -> Template:
        """The template a snapshot is (the sandbox's team's): new, or an earlier snapshot of that name given the
        new image. A name taken by a template that is not a snapshot, or by another team's, is a Conflict."""
        return self._put(name, team_id, team_id, lambda r: None if r.category == category else f"template {name} is not a snapshot",
                         category=category, tags=[category, f"sandbox:{sandbox_id}"],
                         description=f"snapshot of {sandbox_id}", status="active", build_id=None, error_message=None, vcpu=vcpu, memory_mb=memory_mb,
                         disk_gb=disk_gb)

    def _put(self, name: str, team_id: str, team: str | None, refuse: Callable[[TemplateRow], str | None],
             **values: Any) -> Template:
        """Create the custom template name (team_id's), or update it unless refuse(row) says why not (a
        Conflict)."""
        now = _now()
        self._forget()
        with self.store.tx() as s:
            row = self._custom_row(s, name, team)
            created = row is None
            if row is None:
                row = self._new_row(s, name, now, team_id, counted=values.get("category") != FORK)
            elif (why := refuse(row)) is not None:
                raise Conflict(why, code="template_exists")
            for field, value in values.items():
                setattr(row, field, value)
            row.updated_at = now
            t = _model(row)
        self._emit(TEMPLATE_CREATED if created else TEMPLATE_UPDATED, t)
        return t

    def snapshots(self, category: str = SNAPSHOT, team: str | None = None) -> builtins.list[Template]:
        with self.store.tx() as s:
            q = select(TemplateRow).where(TemplateRow.category == category)
            if team is not None:
                q = q.where(TemplateRow.team_id == team)
            return [_model(r) for r in s.scalars(q.order_by(TemplateRow.created_at.desc(), TemplateRow.id))]

    @staticmethod
    def _custom_row(s, name: str, team: str | None) -> TemplateRow | None:
        row = s.scalar(select(TemplateRow).where(TemplateRow.name == name))
        if row is not None and row.is_public:
            raise Invalid(f"{name} is a built-in template", code="template_is_builtin")
        if row is not None and team is not None and row.team_id != team:
            # Names are one namespace over the whole platform (they name images on disk): said without whose.
            raise Conflict(f"the template name {name} is taken", code="template_name_taken")
        return row

    @staticmethod
    def _new_row(s, name: str, now: datetime, team_id: str, counted: bool = True) -> TemplateRow:
        """A new custom template of team_id; counted toward its `max_templates` unless it is a fork's copy."""
        team = s.get(TeamRow, team_id) if counted else None
        if team is not None and team.max_templates is not None:
            have = team_templates(s, team_id)
            if have >= team.max_templates:
                raise QuotaExceeded(
                    f"team {team.name} has reached its limit of {team.max_templates} templates ({have}); delete one "
                    "or ask the operator to raise it",
                    details={"quota": "max_templates", "limit": team.max_templates, "current": have})
        row = TemplateRow(id="tpl_" + secrets.token_hex(8), name=name, display_name=name, is_public=False,
                          created_at=now, category="custom", features=[], tags=["custom"], team_id=team_id)
        s.add(row)
        return row

    def finish_build(self, template_id: str, *, language: str | None, error: str | None) -> Template:
        self._forget()
        with self.store.tx() as s:
            row = s.get(TemplateRow, template_id)
            if row is None:
                raise NotFound(f"template {template_id} not found", code="template_not_found")
            row.status = "failed" if error else "active"
            row.error_message = error
            if language and not row.language:
                row.language = language
            row.updated_at = _now()
            t = _model(row)
        self._emit(TEMPLATE_UPDATED, t)
        return t

    def delete(self, template_id: str, in_use: int, team: str | None = None, manager: bool = True) -> Template:
        t = self.owned(template_id, team, manager)
        if t.is_public:
            raise Invalid(f"{t.name} is a built-in template and cannot be deleted", code="template_is_builtin")
        if t.status == "building":
            raise Conflict(f"template {t.name} is being built", code="template_building")
        if in_use:
            raise Conflict(f"template {t.name} is used by {in_use} sandbox(es)", code="template_in_use",
                           details={"sandboxes": in_use})
        self._forget()
        with self.store.tx() as s:
            s.delete(s.get(TemplateRow, t.id))
            for tag in s.scalars(select(TemplateTagRow).where(TemplateTagRow.template_id == t.id)):
                s.delete(tag)
        self._emit(TEMPLATE_DELETED, t)
        return t

    async def remove(self, template_id: str, in_use: int, team: str | None = None, manager: bool = True
                     ) -> tuple[Template, builtins.list[str]]:
        """delete() and its images and layers with it: the template and the layers freed."""
        t = self.delete(template_id, in_use, team, manager)
        with self.store.tx() as s:
            # A build under way may have just taken one of these layers from the cache and not yet named it in
            # its image: its layers then stay, for the next delete or `sandboxd gc`.
            building = s.scalar(select(func.count()).select_from(TemplateRow).where(TemplateRow.status == "building"))
        return t, await self.source.forget(t.name, free_layers=not building)

    def _emit(self, etype: str, t: Template) -> None:
        self.events.record(Event(type=etype, sandbox_id=None, template_id=t.id,
                                 data={"name": t.name, "status": t.status, "template": t.to_wire()}))
