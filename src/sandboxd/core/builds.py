"""Template builds (contract §4): signed upload links, the build queue (bounded concurrency), status, logs.

Uploads land in `<data_dir>/uploads/<files_hash>.tar.gz`; each build's log is a file in
`<data_dir>/builds/<build_id>.log` (kept after the build), read by byte offset. The actual image build is
the template store's job (sandboxd.templates), reached through a Builder.

A build's log and error are the caller's to read, while the tools under a build (cp, umoci, the runtime)
speak in host paths: every line and error is recorded with the server's own directories masked, so a
build never tells where the data dir, the template store or the import directory live.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Protocol

from sqlalchemy import select

from sandboxd.config import Settings
from sandboxd.core.admission import check_maxima, sandbox_maxima
from sandboxd.core.catalog import CatalogService
from sandboxd.errors import Invalid, NotFound, Unauthorized
from sandboxd.core.eventlog import EventLog
from sandboxd.core.models import iso
from sandboxd.core.store.db import Store
from sandboxd.core.store.tables import BuildRow
from sandboxd.core.tokens import TokenSigner

log = logging.getLogger(__name__)

BUILD_CONCURRENCY = 2
UPLOAD_TTL = 3600
MAX_UPLOAD = 2 * 1024 * 1024 * 1024
HASH_RE = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
STEP_TYPES = {"COPY", "RUN", "ENV", "WORKDIR", "USER", "CMD"}


@dataclass
class BuildRequest:
    name: str
    from_image: str
    steps: list[dict[str, Any]]
    start_cmd: str | None
    ready_cmd: dict[str, Any] | None
    cpu: int
    memory_mb: int
    disk_gb: int
    skip_cache: bool
    update: bool


class Builder(Protocol):
    async def __call__(self, req: BuildRequest, *, uploads: Path, log: Callable[[str], None]) -> dict[str, Any]:
        """Build the template image named req.name; returns metadata (e.g. language). Raises on failure."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def validate_request(req: BuildRequest, uploads: Path) -> None:
    if not NAME_RE.match(req.name):
        raise Invalid("name must be lowercase letters, digits, '.', '_' or '-' (max 63)", code="invalid_template_name")
    if not req.from_image or len(req.from_image) > 256:
        raise Invalid("from_image is required", code="missing_from_image")
    if not req.steps:
        raise Invalid("a build needs at least one step", code="missing_steps")
    for i, step in enumerate(req.steps):
        kind = str(step.get("type", "")).upper()  # the JS builder sends lower-case types
        if kind not in STEP_TYPES:
            raise Invalid(f"steps[{i}]: unknown type {step.get('type')!r}", code="invalid_step")
        args = step.get("args")
        if args is not None and (not isinstance(args, list) or not all(isinstance(a, str) for a in args)):
            raise Invalid(f"steps[{i}]: args must be a list of strings", code="invalid_step")
        if kind == "COPY":
            h = step.get("filesHash") or step.get("files_hash")
            if not isinstance(h, str) or not HASH_RE.match(h):
                raise Invalid(f"steps[{i}]: COPY needs a filesHash from an upload link", code="invalid_step")
            if not (uploads / f"{h}.tar.gz").is_file():
                raise Invalid(f"steps[{i}]: files {h} were not uploaded", code="files_not_uploaded")


def host_masks(settings: Settings) -> list[tuple[str, str]]:
    """(host directory, placeholder) pairs, longest first, for text a caller will read."""
    try:
        from sandboxd.runtime.oci.paths import RUN_ROOT
    except ImportError:
        RUN_ROOT = Path("/run/sandboxd")
    named = [(settings.import_dir, "<import-dir>"), (settings.templates_dir, "<templates>"),
             (settings.data_dir, "<data-dir>"), (RUN_ROOT, "<run-dir>")]
    pairs = {}
    for path, label in named:
        if path is None:
            continue
        for form in {str(path), os.path.realpath(path)}:
            if len(form) > 1:
                pairs.setdefault(form, label)
    return sorted(pairs.items(), key=lambda kv: len(kv[0]), reverse=True)


def mask(text: str, masks: list[tuple[str, str]]) -> str:
    for path, label in masks:
        text = text.replace(path, label)
    return text


def check_from_image(settings: Settings, from_image: str) -> None:
    """A FROM naming an OCI image is checked now (400/404), not later in the background: only an upload or a
    path in the operator's import directory may be named, and the answer never says what exists outside it."""
    try:
        from sandboxd.templates.oci_import import check_ref, is_import_ref
    except ImportError:
        return
    if is_import_ref(from_image):
        check_ref(settings, from_image)


class BuildService:
    def __init__(self, settings: Settings, store: Store, events: EventLog, catalog: CatalogService,
                 signer: TokenSigner, builder: Builder | None = None, backend=None):
        self.settings = settings
        self.store = store
        self.events = events
        self.catalog = catalog
        self.signer = signer
        self.builder = builder
        self.backend = backend
        self.uploads = settings.data_dir / "uploads"
        self.logs_dir = settings.data_dir / "builds"
        self._masks = host_masks(settings)
        self.maxima = sandbox_maxima(settings)
        self._gate = asyncio.Semaphore(BUILD_CONCURRENCY)
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        if self.builder is None:
            self.builder = default_builder(self.settings, self.backend)
        # Builds cut short by a restart cannot resume: mark them failed so clients polling them stop.
        with self.store.tx() as s:
            stale = list(s.scalars(select(BuildRow).where(BuildRow.status == "building")))
            for b in stale:
                b.status, b.error_message, b.completed_at = "failed", "interrupted by a server restart", _now()
        for b in stale:
            self.catalog.finish_build(b.template_id, language=None, error="interrupted by a server restart")

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- uploads ------------------------------------------------------------------------------------

    def upload_link(self, files_hash: str, content_length: int, base_url: str) -> dict[str, Any]:
        if not HASH_RE.match(files_hash):
            raise Invalid("files_hash must be 8..128 characters of [A-Za-z0-9_-]", code="invalid_files_hash")
        if content_length < 0 or content_length > MAX_UPLOAD:
            raise Invalid(f"content_length must be 0..{MAX_UPLOAD}", code="invalid_content_length")
        if (self.uploads / f"{files_hash}.tar.gz").is_file():
            return {"present": True, "files_hash": files_hash}
        expires = int(time.time()) + UPLOAD_TTL
        sig = self.signer.sign_upload(files_hash, expires)
        url = f"{base_url.rstrip('/')}/v1/templates/files/upload/{files_hash}?expires={expires}&signature={sig}"
        return {"present": False, "upload_url": url, "expires_at": iso(datetime.fromtimestamp(expires, timezone.utc)),
                "files_hash": files_hash}

    async def receive_upload(self, files_hash: str, expires: int, signature: str, body: AsyncIterator[bytes]) -> int:
        if not HASH_RE.match(files_hash) or not self.signer.check_upload(files_hash, expires, signature):
            raise Unauthorized("upload URL is invalid or expired", code="invalid_upload_signature")
        final = self.uploads / f"{files_hash}.tar.gz"
        tmp = self.uploads / f".{files_hash}.{secrets.token_hex(4)}.part"
        size = 0
        try:
            with open(tmp, "wb") as f:
                async for chunk in body:
                    size += len(chunk)
                    if size > MAX_UPLOAD:
                        raise Invalid("upload too large", code="payload_too_large")
                    f.write(chunk)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return size

    # ---- builds -------------------------------------------------------------------------------------

    def trigger(self, req: BuildRequest) -> dict[str, Any]:
        from sandboxd.core.template_source import check_recipe

        validate_request(req, self.uploads)
        # Every sandbox of the template gets these: over a per-sandbox maximum, the build (or update) is refused.
        check_maxima(self.maxima, vcpu=req.cpu, memory_mb=req.memory_mb, disk_mb=req.disk_gb * 1024,
                     names={"vcpu": "cpu", "memory": "memory", "disk": "diskGB"}, what="the template")
        check_recipe(req)
        check_from_image(self.settings, req.from_image)
        build_id = "bld_" + secrets.token_hex(8)
        t = self.catalog.begin_build(req.name, build_id, vcpu=req.cpu, memory_mb=req.memory_mb, disk_gb=req.disk_gb,
                                     update=req.update)
        with self.store.tx() as s:
            s.add(BuildRow(id=build_id, template_id=t.id, status="building", progress=0, current_step="queued",
                           request=req.__dict__, started_at=_now()))
        (self.logs_dir / f"{build_id}.log").write_text(f"build {build_id} of template {req.name} queued\n")
        task = asyncio.create_task(self._run(build_id, t.id, req))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return {"build_id": build_id, "template_id": t.id, "status": "building",
                "logs_url": f"/v1/templates/build/{t.id}/logs"}

    def _log(self, build_id: str, line: str) -> None:
        with open(self.logs_dir / f"{build_id}.log", "a", encoding="utf-8") as f:
            f.write(mask(line.rstrip("\n"), self._masks) + "\n")

    def _update(self, build_id: str, **values: Any) -> None:
        with self.store.tx() as s:
            b = s.get(BuildRow, build_id)
            for k, v in values.items():
                setattr(b, k, v)

    async def _run(self, build_id: str, template_id: str, req: BuildRequest) -> None:
        async with self._gate:
            self._update(build_id, current_step="building", progress=5)
            self._log(build_id, f"building {req.name} from {req.from_image} ({len(req.steps)} steps)")
            t0 = time.monotonic()
            error = None
            meta: dict[str, Any] = {}
            try:
                meta = await self.builder(req, uploads=self.uploads, log=lambda line: self._log(build_id, line))
            except asyncio.CancelledError:
                error = "build cancelled (server shutting down)"
            except Exception as exc:  # the build's own failure: recorded, never a 5xx to anyone
                error = mask(str(exc) or type(exc).__name__, self._masks)
                log.info("build %s failed: %s", build_id, error)
            ms = int((time.monotonic() - t0) * 1000)
            if error:
                self._log(build_id, f"ERROR: build failed: {error}")
            else:
                self._log(build_id, f"✅ build finished in {ms} ms")
            self._update(build_id, status="failed" if error else "active", progress=100 if not error else 0,
                         current_step=None, error_message=error, completed_at=_now())
            self.catalog.finish_build(template_id, language=(meta or {}).get("language"), error=error)

    def status(self, build_id: str) -> dict[str, Any]:
        with self.store.tx() as s:
            b = s.get(BuildRow, build_id)
            if b is None:
                raise NotFound(f"build {build_id} not found", code="build_not_found")
            out = {"build_id": b.id, "template_id": b.template_id, "status": b.status, "progress": b.progress,
                   "started_at": iso(b.started_at), "current_step": b.current_step,
                   "completed_at": iso(b.completed_at), "error_message": b.error_message,
                   "build_duration_ms": int((b.completed_at - b.started_at).total_seconds() * 1000)
                   if b.completed_at else None}
        return out

    def logs(self, template_or_build_id: str, offset: int) -> dict[str, Any]:
        if offset < 0:
            raise Invalid("offset must be >= 0", code="invalid_offset")
        with self.store.tx() as s:
            b = s.get(BuildRow, template_or_build_id) or s.scalar(
                select(BuildRow).where(BuildRow.template_id == template_or_build_id)
                .order_by(BuildRow.started_at.desc()).limit(1))
            if b is None:
                raise NotFound(f"no build for {template_or_build_id}", code="build_not_found")
            build_id, status = b.id, b.status
        path = self.logs_dir / f"{build_id}.log"
        data = b""
        if path.is_file():
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read(1024 * 1024)
        # Cut at the last full line so a multi-byte character is never split between two reads.
        if status == "building" and b"\n" in data:
            data = data[: data.rindex(b"\n") + 1]
        elif status == "building":
            data = b""
        return {"logs": data.decode("utf-8", errors="replace"), "offset": offset + len(data), "status": status,
                "complete": status != "building" and len(data) < 1024 * 1024}


def default_builder(settings: Settings, backend=None) -> Builder:
    from sandboxd.core.template_source import template_builder

    return template_builder(settings, backend)
