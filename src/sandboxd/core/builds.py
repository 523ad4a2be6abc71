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
import hashlib
import json
import logging
import os
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Sequence
from typing import Any, AsyncIterator, Callable, Protocol

from sqlalchemy import select

from sandboxd.config import Settings
from sandboxd.core.admission import check_maxima, sandbox_maxima
from sandboxd.core.catalog import CatalogService
from sandboxd.errors import Conflict, Invalid, NotFound, Unauthorized
from sandboxd.core.eventlog import EventLog
from sandboxd.core.models import iso
from sandboxd.core.store.db import Store
from sandboxd.core.store.tables import DEFAULT_TEAM_ID, BuildRow
from sandboxd.core.tags import DEFAULT_TAG, TagService
from sandboxd.core.tokens import TokenSigner
from sandboxd.runtime.oci.paths import RUN_ROOT

log = logging.getLogger(__name__)

STEP_LINE = re.compile(r"^Step (\d+)/\d+: ")  # templates/build.py logs one before each step
BUILD_CONCURRENCY = 2
UPLOAD_TTL = 3600
MAX_UPLOAD = 2 * 1024 * 1024 * 1024
HASH_RE = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
STEP_TYPES = {"COPY", "RUN", "ENV", "WORKDIR", "USER", "CMD", "FROM"}


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
    hidden_steps: int = 0  # leading steps the caller did not write: not counted in the step a failure names
    tags: list[str] = field(default_factory=list)  # what the build is tagged once it succeeds (core/tags.py)


class Builder(Protocol):
    async def __call__(self, req: BuildRequest, *, uploads: Path, log: Callable[[str], None]) -> dict[str, Any]:
        """Build the template image named req.name; returns metadata (e.g. language). Raises on failure."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def upload_key(team_id: str, files_hash: str) -> str:
    """Where a team's upload of files_hash is kept. The hash is the client's word, not a digest we check, so
    uploads are per team: a team that learns another's hash must not build from (read) those files."""
    return hashlib.sha256(f"{team_id}/{files_hash}".encode()).hexdigest()[:48]


def team_uploads(req: BuildRequest, team_id: str) -> None:
    """Point req's COPY steps and `oci-archive:upload:` base at the team's own uploads (after validation)."""
    for step in req.steps:
        for field_name in ("filesHash", "files_hash"):
            if isinstance(step.get(field_name), str):
                step[field_name] = upload_key(team_id, step[field_name])
    prefix = "oci-archive:upload:"
    if req.from_image.startswith(prefix):
        files_hash, sep, tag = req.from_image.removeprefix(prefix).partition(":")
        if HASH_RE.match(files_hash):  # anything else stays as given, for the image check to refuse by name
            req.from_image = prefix + upload_key(team_id, files_hash) + sep + tag


def validate_request(req: BuildRequest, uploads: Path, team_id: str = DEFAULT_TEAM_ID) -> None:
    if not NAME_RE.match(req.name):
        raise Invalid("name must be lowercase letters, digits, '.', '_' or '-' (max 63)", code="invalid_template_name")
    if not req.from_image or len(req.from_image) > 256:
        raise Invalid("from_image is required", code="missing_from_image")
    for i, step in enumerate(req.steps):
        kind = str(step.get("type", "")).upper()  # the JS builder sends lower-case types
        if kind not in STEP_TYPES:
            raise Invalid(f"steps[{i}]: unknown type {step.get('type')!r}", code="invalid_step")
        args = step.get("args")
        if args is not None and (not isinstance(args, list) or not all(isinstance(a, str) for a in args)):
            raise Invalid(f"steps[{i}]: args must be a list of strings", code="invalid_step")
        if kind == "COPY" and step.get("fromStage") is None and step.get("fromImage") is None:
            h = step.get("filesHash") or step.get("files_hash")
            if not isinstance(h, str) or not HASH_RE.match(h):
                raise Invalid(f"steps[{i}]: COPY needs a filesHash from an upload link", code="invalid_step")
            if not (uploads / f"{upload_key(team_id, h)}.tar.gz").is_file():
                raise Invalid(f"steps[{i}]: files {h} were not uploaded", code="files_not_uploaded")


def host_masks(settings: Settings) -> list[tuple[str, str]]:
    """(host directory, placeholder) pairs, longest first, for text a caller will read."""
    named = [(settings.import_dir, "<import-dir>"), (settings.templates_dir, "<templates>"),
             (settings.data_dir, "<data-dir>"), (RUN_ROOT, "<run-dir>")]
    pairs: dict[str, str] = {}
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


def check_from_image(settings: Settings, from_image: str, is_template: Callable[[str], bool]) -> None:
    """FROM is checked now (400/404), not later in the background: a template, an upload or a path in the
    operator's import directory (whose answer never says what exists outside it), an image of a registry the
    operator configured, or a name the operator maps onto a template. Anything else is a 404: never a stand-in."""
    from sandboxd.templates import registry
    from sandboxd.templates.build import image_not_found
    from sandboxd.templates.oci_import import check_ref, is_import_ref

    ref = from_image.strip()
    if is_import_ref(ref):
        check_ref(settings, ref)
    elif not (is_template(ref) or registry.source(settings, ref) or registry.alias(settings, ref)):
        raise NotFound(image_not_found(ref), code="image_not_found")


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
        self.tags = TagService(store)
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

    def upload_link(self, files_hash: str, content_length: int, base_url: str, team_id: str = DEFAULT_TEAM_ID
                    ) -> dict[str, Any]:
        """A signed URL to upload files_hash as team_id's (or `present` when the team has them)."""
        if not HASH_RE.match(files_hash):
            raise Invalid("files_hash must be 8..128 characters of [A-Za-z0-9_-]", code="invalid_files_hash")
        if content_length < 0 or content_length > MAX_UPLOAD:
            raise Invalid(f"content_length must be 0..{MAX_UPLOAD}", code="invalid_content_length")
        key = upload_key(team_id, files_hash)
        if (self.uploads / f"{key}.tar.gz").is_file():
            return {"present": True, "files_hash": files_hash}
        expires = int(time.time()) + UPLOAD_TTL
        sig = self.signer.sign_upload(key, expires)
        url = f"{base_url.rstrip('/')}/v1/templates/files/upload/{key}?expires={expires}&signature={sig}"
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

    def trigger(self, req: BuildRequest, names: dict[str, str] | None = None, *, team_id: str = DEFAULT_TEAM_ID,
                team: str | None = None) -> dict[str, Any]:
        """Check and queue a build; `names` spells cpu/memory/disk as the caller's dialect does. team_id: whose a
        new template is, and whose uploads the build reads; team: the caller's scope (None: the operator),
        which must own an existing one."""
        self._check(req, names, team, team_id)
        build_id = "bld_" + secrets.token_hex(8)
        t = self.catalog.begin_build(req.name, build_id, vcpu=req.cpu, memory_mb=req.memory_mb, disk_gb=req.disk_gb,
                                     update=req.update, team_id=team_id, team=team)
        with self.store.tx() as s:
            s.add(BuildRow(id=build_id, template_id=t.id, status="building", progress=0, current_step="queued",
                           request=req.__dict__, started_at=_now()))
        self._launch(build_id, t.id, req)
        return {"build_id": build_id, "template_id": t.id, "status": "building",
                "logs_url": f"/v1/templates/build/{t.id}/logs"}

    def reserve(self, name: str, *, cpu: int, memory_mb: int, disk_gb: int, tags: Sequence[str] = (),
                names: dict[str, str] | None = None, team_id: str = DEFAULT_TEAM_ID, team: str | None = None
                ) -> tuple[Any, str]:
        """A build announced before its recipe (E2B's flow: request, upload, then start): the template exists
        from now on (a new one as `pending`, an existing one keeps serving its current image) and the build
        waits. Returns (template, build id). team_id, team: as for trigger()."""
        if not NAME_RE.match(name):
            raise Invalid("name must be lowercase letters, digits, '.', '_' or '-' (max 63)",
                          code="invalid_template_name")
        check_maxima(self.maxima, vcpu=cpu, memory_mb=memory_mb, disk_mb=disk_gb * 1024,
                     names=names or {"vcpu": "cpu", "memory": "memory", "disk": "diskGB"}, what="the template")
        t = self.catalog.reserve(name, vcpu=cpu, memory_mb=memory_mb, disk_gb=disk_gb, team_id=team_id, team=team)
        build_id = str(uuid.uuid4())
        with self.store.tx() as s:
            s.add(BuildRow(id=build_id, template_id=t.id, status="waiting", progress=0, current_step="waiting",
                           request={"name": name, "cpu": cpu, "memory_mb": memory_mb, "disk_gb": disk_gb,
                                    "tags": list(tags)},
                           started_at=_now()))
        return t, build_id

    def start_build(self, template_id: str, build_id: str, req: BuildRequest,
                    names: dict[str, str] | None = None, team: str | None = None,
                    team_id: str = DEFAULT_TEAM_ID) -> None:
        """Start a build reserve() announced, with its recipe; team, team_id: the caller's, as for trigger()."""
        t = self.catalog.owned(template_id, team)
        with self.store.tx() as s:
            b = s.get(BuildRow, build_id)
            if b is None or b.template_id != template_id:
                raise NotFound(f"build {build_id} of template {template_id} not found", code="build_not_found")
            if b.status != "waiting":
                raise Conflict(f"build {build_id} was already started", code="build_started")
            req.tags = req.tags or list((b.request or {}).get("tags") or [])
        self._check(req, names, team, team_id)
        self.catalog.begin_build(req.name, build_id, vcpu=req.cpu, memory_mb=req.memory_mb, disk_gb=req.disk_gb,
                                 update=True, team_id=t.team_id or DEFAULT_TEAM_ID, team=team)
        self._update(build_id, status="building", current_step="queued", request=req.__dict__, started_at=_now())
        self._launch(build_id, template_id, req)

    def _check(self, req: BuildRequest, names: dict[str, str] | None, team: str | None, team_id: str) -> None:
        from sandboxd.core.template_source import check_recipe

        validate_request(req, self.uploads, team_id)
        team_uploads(req, team_id)
        # Every sandbox of the template gets these: over a per-sandbox maximum, the build (or update) is refused.
        check_maxima(self.maxima, vcpu=req.cpu, memory_mb=req.memory_mb, disk_mb=req.disk_gb * 1024,
                     names=names or {"vcpu": "cpu", "memory": "memory", "disk": "diskGB"}, what="the template")
        check_recipe(req)
        check_from_image(self.settings, req.from_image, lambda ref: self._is_template(ref, team))

    def _is_template(self, ref: str, team: str | None) -> bool:
        try:
            self.catalog.get(ref, team)  # another team's private template is no base for this one
            return True
        except NotFound:
            return False

    def _mine(self, template_id: str, team: str | None, what: str) -> None:
        """A build is seen only by its template's team (and the operator): another's is missing."""
        if team is None:
            return
        try:
            if self.catalog.get(template_id, team).team_id == team:
                return
        except NotFound:
            pass
        raise NotFound(f"build {what} not found", code="build_not_found")

    def _launch(self, build_id: str, template_id: str, req: BuildRequest) -> None:
        self._log(build_id, f"build {build_id} of template {req.name} queued")
        task = asyncio.create_task(self._run(build_id, template_id, req))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _log(self, build_id: str, line: str) -> None:
        text = mask(line.rstrip("\n"), self._masks)
        with open(self.logs_dir / f"{build_id}.log", "a", encoding="utf-8") as f:
            f.write(text + "\n")
        # The same lines with their time, for clients that read a build's log as entries (E2B).
        entry = {"t": iso(_now()), "level": "error" if text.startswith("ERROR") else "info", "message": text}
        with open(self.logs_dir / f"{build_id}.entries", "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    def entries(self, build_id: str, offset: int, limit: int = 100, team: str | None = None) -> dict[str, Any]:
        """A build's status and its log as entries from `offset` (an entry count), at most `limit` of them;
        for a failed build, the step that failed: its number (1-based), or "base" for the FROM."""
        if offset < 0:
            raise Invalid("logsOffset must be >= 0", code="invalid_offset")
        with self.store.tx() as s:
            b = s.get(BuildRow, build_id)
            if b is None:
                raise NotFound(f"build {build_id} not found", code="build_not_found")
            status, error, template_id = b.status, b.error_message, b.template_id
            hidden = int((b.request or {}).get("hidden_steps") or 0)
        self._mine(template_id, team, build_id)
        path = self.logs_dir / f"{build_id}.entries"
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        out = [json.loads(line) for line in lines[offset: offset + limit]]
        step = None
        if status == "failed":  # the last step begun, in the caller's numbering; none: the FROM
            begun = [int(m.group(1)) - hidden for m in (STEP_LINE.match(json.loads(line)["message"]) for line in lines)
                     if m]
            step = str(begun[-1]) if begun and begun[-1] >= 1 else "base"
        return {"status": status, "template_id": template_id, "entries": out, "error": error, "failed_step": step}

    def _update(self, build_id: str, **values: Any) -> None:
        with self.store.tx() as s:
            b = s.get(BuildRow, build_id)
            for k, v in values.items():
                setattr(b, k, v)

    async def _run(self, build_id: str, template_id: str, req: BuildRequest) -> None:
        async with self._gate:
            self._update(build_id, current_step="building", progress=5)
            self._log(build_id, f"building {req.name} from {req.from_image} ({len(req.steps)} step{'' if len(req.steps) == 1 else 's'})")
            t0 = time.monotonic()
            error = None
            meta: dict[str, Any] = {}
            assert self.builder is not None  # start() chose one before any build could be launched
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
                         current_step=None, error_message=error, completed_at=_now(),
                         content_hash=None if error else (meta or {}).get("content_hash"))
            if not error:
                self.tags.assign(template_id, build_id, req.tags or [DEFAULT_TAG])
            self.catalog.finish_build(template_id, language=(meta or {}).get("language"), error=error)

    def status(self, build_id: str, team: str | None = None) -> dict[str, Any]:
        with self.store.tx() as s:
            b = s.get(BuildRow, build_id)
            if b is None:
                raise NotFound(f"build {build_id} not found", code="build_not_found")
            template_id = b.template_id
            out = {"build_id": b.id, "template_id": b.template_id, "status": b.status, "progress": b.progress,
                   "started_at": iso(b.started_at), "current_step": b.current_step,
                   "completed_at": iso(b.completed_at), "error_message": b.error_message,
                   "build_duration_ms": int((b.completed_at - b.started_at).total_seconds() * 1000)
                   if b.completed_at else None}
        self._mine(template_id, team, build_id)
        return out

    def logs(self, template_or_build_id: str, offset: int, team: str | None = None) -> dict[str, Any]:
        if offset < 0:
            raise Invalid("offset must be >= 0", code="invalid_offset")
        with self.store.tx() as s:
            b = s.get(BuildRow, template_or_build_id) or s.scalar(
                select(BuildRow).where(BuildRow.template_id == template_or_build_id)
                .order_by(BuildRow.started_at.desc()).limit(1))
            if b is None:
                raise NotFound(f"no build for {template_or_build_id}", code="build_not_found")
            build_id, status, template_id = b.id, b.status, b.template_id
        self._mine(template_id, team, template_or_build_id)
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
