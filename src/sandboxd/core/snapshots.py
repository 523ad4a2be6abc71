"""Snapshots: a sandbox's filesystem saved as a template that new sandboxes start from (E2B's
`create_snapshot`, `list_snapshots`, `delete_snapshot`; docs/e2b.md "Snapshots").

A snapshot is a template of category `snapshot`: the image of the sandbox's template plus one layer of what
the sandbox changed (templates/snapshot.py). The sandbox is frozen while its changes are copied and runs on
after. What is kept is the filesystem; memory (running processes) is not, so a sandbox made from a snapshot
boots fresh on those files (E2B's `mode="filesystem"`).
"""
from __future__ import annotations

import secrets

from sandboxd.core.catalog import CatalogService
from sandboxd.core.lifecycle import LifecycleService
from sandboxd.core.models import Template
from sandboxd.errors import Invalid
from sandboxd.runtime.base import Backend
from sandboxd.templates.steps import check_name

from sandboxd.core.tags import DEFAULT_TAG


def snapshot_names(t: Template) -> list[str]:
    return [f"{t.name}:{DEFAULT_TAG}"]


def source_sandbox(t: Template) -> str | None:
    return next((tag.split(":", 1)[1] for tag in t.tags or [] if tag.startswith("sandbox:")), None)


class SnapshotService:
    def __init__(self, catalog: CatalogService, lifecycle: LifecycleService, backend: Backend):
        self.catalog, self.lifecycle, self.backend = catalog, lifecycle, backend

    async def create(self, sandbox_id: str, name: str | None = None) -> Template:
        sb = self.lifecycle.get(sandbox_id)
        name = (name or "").strip()
        if name.endswith(f":{DEFAULT_TAG}"):
            name = name[: -len(DEFAULT_TAG) - 1]
        if name and ":" in name:
            raise Invalid(f"a snapshot's tag is always {DEFAULT_TAG!r}: name it without one", code="invalid_name")
        name = check_name(name) if name else f"snapshot-{secrets.token_hex(6)}"
        template = self.catalog.get(sb.template_id or sb.template_name or "")
        parent = await self.catalog.image(template)
        await self.catalog.source.snapshot(name, parent, lambda dest: self.backend.export_changes(sb.id, dest), sb.id)
        return self.catalog.save_snapshot(name, sandbox_id=sb.id, vcpu=max(1, int(sb.vcpu)),
                                          memory_mb=sb.memory_mb, disk_gb=max(1, sb.disk_mb // 1024))

    def list(self, *, sandbox_id: str | None = None, name: str | None = None) -> list[Template]:
        """Newest first. name matches a snapshot's name, its id or its name:tag."""
        found = self.catalog.snapshots()
        if sandbox_id:
            found = [t for t in found if source_sandbox(t) == sandbox_id]
        if name:
            found = [t for t in found if name in (t.name, t.id, *snapshot_names(t))]
        return found
