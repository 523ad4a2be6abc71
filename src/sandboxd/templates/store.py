"""The template image store: built layers and named images on disk.

Layout under settings.templates_dir (one filesystem, so a finished build is one atomic rename):

    layers/<hash>/rootfs/      a read-only layer (a whole rootfs for a base, a diff for a build step),
                               uid-shifted once to the store's convention (shift.py); sandboxes see it
                               through mounts idmapped to their own uid range (runtime/rootfs.py)
    layers/<hash>/layer.json   what made it (kind, parent, step)
    images/<name>.json         a named image: content hash, layer hashes (top-most first), env, workdir,
                               user, start command, ready check
    images/.hashes/<hash>.json every image saved, by content hash: a tag may name an older build
    tmp/                       builds in progress; never read as an image
    .lock                      serialises writers across processes

layers/, images/ and tmp/ are 0700 root: a layer holds files a sandbox wrote, setuid ones included (kept on
purpose, they are the image's), an image its environment, and no host user but root may reach them. Sandboxes never need these paths: their
layers are opened by the host when it mounts their root.
"""
from __future__ import annotations

import asyncio
import builtins
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from sandboxd.config import Settings
from sandboxd.errors import BuildFailed, Conflict, NotFound
from sandboxd.runtime.base import BUILTIN_LAYER, LAYER_INFO, ReadyCheck, TemplateImage
from sandboxd.runtime import uidslots
from sandboxd.templates import bases
from sandboxd.templates.shift import shift_tree
from sandboxd.templates.steps import NAME_RE, check_name  # noqa: F401  (check_name: the store's callers use it from here)

Log = Callable[[str], None]


HEX_RE = re.compile(r"^[0-9a-f]{12,64}$")


def _noop(_: str) -> None:
    pass


def _private(d: Path, create: bool = True) -> None:
    """d as a directory only root may enter."""
    if create:
        d.mkdir(parents=True, exist_ok=True)
    try:
        if d.stat().st_mode & 0o077:
            os.chmod(d, 0o700)
    except FileNotFoundError:
        pass


def image_to_dict(image: TemplateImage) -> dict[str, Any]:
    return {
        "name": image.name,
        "content_hash": image.content_hash,
        "layers": [p.parent.name for p in image.layers],
        "env": image.env,
        "workdir": image.workdir,
        "user": image.user,
        "start_cmd": image.start_cmd,
        "ready_check": None if image.ready_check is None else {
            "kind": image.ready_check.kind, "value": image.ready_check.value,
            "timeout_seconds": image.ready_check.timeout_seconds},
        **({"agent_runtime": image.agent_runtime.parent.name} if image.agent_runtime else {}),
    }


def image_layers(image: TemplateImage) -> tuple[Path, ...]:
    """Every layer an image needs: its own and the agent runtime its sandboxes bind."""
    return image.layers + ((image.agent_runtime,) if image.agent_runtime else ())


class TemplateStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.root = Path(settings.templates_dir)
        self.layers_dir = self.root / "layers"
        self.images_dir = self.root / "images"
        # Every image ever saved, by content hash: a tag may name an older build of a template (E2B's
        # `name:tag`). Kept until the template is deleted.
        self.hashes_dir = self.images_dir / ".hashes"
        self.tmp_dir = self.root / "tmp"
        for d in (self.layers_dir, self.images_dir, self.tmp_dir):  # a store made before they were private
            _private(d, create=False)
        # One in-process lock too: fcntl locks do not exclude coroutines of the same process.
        self._alock = asyncio.Lock()

    # ---- reading -------------------------------------------------------------------------------
    def layer_path(self, layer_hash: str) -> Path:
        return self.layers_dir / layer_hash / "rootfs"

    def has_layer(self, layer_hash: str) -> bool:
        return (self.layers_dir / layer_hash / LAYER_INFO).is_file()

    def _load(self, path: Path) -> TemplateImage:
        doc = json.loads(path.read_text())
        rc = doc.get("ready_check")
        return TemplateImage(
            name=doc["name"],
            layers=tuple(self.layer_path(h) for h in doc["layers"]),
            content_hash=doc["content_hash"],
            env=dict(doc.get("env") or {}),
            workdir=doc.get("workdir") or "/workspace",
            user=doc.get("user") or "root",
            start_cmd=doc.get("start_cmd"),
            ready_check=ReadyCheck(**rc) if rc else None,
            agent_runtime=self.layer_path(doc["agent_runtime"]) if doc.get("agent_runtime") else None,
        )

    def _load_all(self, paths: Iterable[Path]) -> builtins.list[TemplateImage]:
        """The images of these documents that still exist: another process (or thread) may delete one between
        the listing and the read, and an image deleted meanwhile is simply not there any more."""
        out = []
        for path in paths:
            try:
                out.append(self._load(path))
            except FileNotFoundError:
                continue
        return out

    def list(self) -> list[TemplateImage]:
        if not self.images_dir.is_dir():
            return []
        return self._load_all(sorted(self.images_dir.glob("*.json")))

    def get(self, name_or_hash: str) -> TemplateImage:
        """An image by name, or by (a unique prefix of at least 12 characters of) its content hash."""
        path = self.images_dir / f"{name_or_hash}.json"
        if NAME_RE.match(name_or_hash or "") and path.is_file():
            return self._load(path)
        if name_or_hash and len(name_or_hash) >= 12:
            found = [i for i in self.list() if i.content_hash.startswith(name_or_hash)]
            if found:
                return found[0]
            if HEX_RE.match(name_or_hash):
                older = sorted(self.hashes_dir.glob(f"{name_or_hash}*.json")) if self.hashes_dir.is_dir() else []
                if older:
                    return self._load(older[0])
        raise NotFound(f"template {name_or_hash!r} not found", code="template_not_found")

    def info(self, name: str) -> dict[str, Any]:
        """The stored metadata of a named image as a dict (adds builtin, description, created_at, from_image)."""
        path = self.images_dir / f"{name}.json"
        if not (NAME_RE.match(name or "") and path.is_file()):
            raise NotFound(f"template {name!r} not found", code="template_not_found")
        return json.loads(path.read_text())

    def exists(self, name: str) -> bool:
        return (self.images_dir / f"{name}.json").is_file()

    # ---- writing -------------------------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def new_tmp(self, prefix: str) -> Path:
        _private(self.tmp_dir)
        path = self.tmp_dir / f"{prefix}-{uuid.uuid4().hex[:10]}"
        path.mkdir()
        return path

    def commit_layer(self, staged: Path, layer_hash: str, info: dict[str, Any]) -> Path:
        """Register staged/rootfs as layer layer_hash with one rename; returns the layer's rootfs."""
        (staged / LAYER_INFO).write_text(json.dumps({**info, "hash": layer_hash, "created_at": time.time()}))
        _private(self.layers_dir)
        final = self.layers_dir / layer_hash
        if self.has_layer(layer_hash):  # someone else built the same content meanwhile
            shutil.rmtree(staged, ignore_errors=True)
        else:
            shutil.rmtree(final, ignore_errors=True)  # a leftover without layer.json is not a layer
            os.rename(staged, final)
        return final / "rootfs"

    def save_image(self, image: TemplateImage, *, builtin: bool = False, extra: dict[str, Any] | None = None) -> None:
        _private(self.images_dir)
        doc = {**image_to_dict(image), "builtin": builtin, "created_at": time.time(), **(extra or {})}
        tmp = self.images_dir / f".{image.name}.json.{uuid.uuid4().hex[:6]}"
        tmp.write_text(json.dumps(doc, indent=1))
        _private(self.hashes_dir)
        shutil.copyfile(tmp, self.hashes_dir / f"{image.content_hash}.json")
        os.replace(tmp, self.images_dir / f"{image.name}.json")

    def delete(self, name: str) -> None:
        """Forget a named image. Its layers stay (running sandboxes and the build cache use them); gc() frees them."""
        if name in bases.BUILTINS:
            raise Conflict(f"template {name!r} is built in and cannot be deleted")
        path = self.images_dir / f"{name}.json"
        if not path.is_file():
            raise NotFound(f"template {name!r} not found", code="template_not_found")
        path.unlink()
        for older in self._builds_of(name):
            older.unlink(missing_ok=True)

    def _builds_of(self, name: str) -> builtins.list[Path]:
        """The recorded builds of a template (a concurrent delete may take one away while they are read)."""
        found = []
        for doc in self._hash_docs():
            try:
                if json.loads(doc.read_text()).get("name") == name:
                    found.append(doc)
            except FileNotFoundError:
                continue
        return found

    def remove(self, name: str) -> set[str]:
        """Delete a named image and its recorded builds; the layers they used (for free_layers)."""
        docs = [self.images_dir / f"{name}.json", *self._builds_of(name)]
        layers = {lp.parent.name for image in self._load_all(docs) for lp in image_layers(image)}
        self.delete(name)
        return layers

    def free_layers(self, candidates: set[str], keep: frozenset[str] | set[str] = frozenset()) -> set[str]:
        """Remove those of candidates no image or recorded build uses and not in keep (the caller passes the
        layers sandboxes mount: layers_in_use); the removed ones. Unlike gc(), nothing else is swept."""
        with self.locked():
            used = set(keep)
            for image in [*self.list(), *self._load_all(self._hash_docs())]:
                used.update(lp.parent.name for lp in image_layers(image))
            removed = {h for h in candidates - used if (self.layers_dir / h).is_dir()}
            for layer in removed:
                shutil.rmtree(self.layers_dir / layer, ignore_errors=True)
        return removed

    def _hash_docs(self) -> builtins.list[Path]:
        return sorted(self.hashes_dir.glob("*.json")) if self.hashes_dir.is_dir() else []

    def gc(self, keep: frozenset[str] | set[str] = frozenset(), tmp_age_seconds: float = 6 * 3600) -> builtins.list[str]:
        """Remove layers no named image uses and stale tmp builds; returns the removed layer hashes.

        The store does not know which sandboxes run: the caller passes the layer hashes they use in keep
        (removing a mounted lower dir breaks its sandbox). Build dirs in tmp/ younger than tmp_age_seconds
        may belong to a build in progress in another process and are left alone.
        """
        used = set(keep)
        for image in [*self.list(), *self._load_all(self._hash_docs())]:
            used.update(p.parent.name for p in image_layers(image))
        removed = []
        with self.locked():
            for layer in self.layers_dir.glob("*") if self.layers_dir.is_dir() else []:
                if layer.name not in used:
                    shutil.rmtree(layer, ignore_errors=True)
                    removed.append(layer.name)
            cutoff = time.time() - tmp_age_seconds
            for staged in self.tmp_dir.glob("*") if self.tmp_dir.is_dir() else []:
                if staged.lstat().st_mtime < cutoff:
                    shutil.rmtree(staged, ignore_errors=True)
        return removed

    def layers_in_use(self, data_dir: Path) -> set[str]:
        """The layers gc() must keep besides the named images': the ones mounted anywhere on the host (the
        lower dirs of a running sandbox's overlay, whatever its data dir) and the ones named in a sandbox
        record under data_dir (a stopped or paused sandbox mounts them again when it starts)."""
        found = re.compile(re.escape(str(self.layers_dir)) + r"/([^/\s,:]+)")
        texts = [Path("/proc/self/mountinfo").read_text()]
        # Overlays are built from layer fds (mountinfo names no layer path): every sandbox on the host
        # holds a uid range, and its record names its layers.
        records = [*(data_dir / "sandboxes").glob("*/state.json"), *uidslots.claimed_dirs_records()]
        for record in records:
            try:
                texts.append(record.read_text())
            except OSError:  # removed meanwhile
                pass
        return {m.group(1) for text in texts for m in found.finditer(text)}

    # ---- built-ins -------------------------------------------------------------------------------
    def builtin_hash(self, name: str) -> str:
        return bases.recipe_hash(bases.BUILTINS[name], self.settings.uid_base, self.settings.uid_count)

    def builtin_missing(self) -> builtins.list[str]:
        missing = []
        for name in bases.BUILTINS:
            h = self.builtin_hash(name)
            if not (self.exists(name) and self.get(name).content_hash == h and self.has_layer(h)):
                missing.append(name)
        return missing

    async def ensure_builtins(self, log: Log = _noop, names: builtins.list[str] | None = None) -> builtins.list[TemplateImage]:
        """Make sure every built-in image exists for the current recipes; build only what is missing."""
        out = []
        for name in names or list(bases.BUILTINS):
            out.append(await self.ensure_builtin(name, log))
        return out

    async def ensure_builtin(self, name: str, log: Log = _noop) -> TemplateImage:
        recipe = bases.BUILTINS[name]
        h = self.builtin_hash(name)
        async with self._alock:
            with self.locked():
                if not self.has_layer(h):
                    log(f"[{name}] building image {h[:12]}")
                    started = time.monotonic()
                    staged = self.new_tmp(name)
                    try:
                        await bases.build_base(recipe, staged / "rootfs", staged / "work", log)
                        shutil.rmtree(staged / "work", ignore_errors=True)
                        n = await asyncio.to_thread(shift_tree, staged / "rootfs", self.settings.uid_base,
                                                    self.settings.uid_count)
                        log(f"[{name}] shifted {n} inodes to uid base {self.settings.uid_base}")
                        self.commit_layer(staged, h, {"kind": BUILTIN_LAYER, "recipe": name})
                    except BaseException:
                        await asyncio.to_thread(shutil.rmtree, staged, True)
                        raise
                    log(f"[{name}] built in {time.monotonic() - started:.1f}s")
                image = TemplateImage(name=name, layers=(self.layer_path(h),), content_hash=h,
                                      env=bases.image_env(), workdir="/workspace", user="root")
                if not self.exists(name) or self.get(name).content_hash != h:
                    self.save_image(image, builtin=True, extra={"description": recipe.description})
                    log(f"[{name}] registered")
                else:
                    log(f"[{name}] up to date ({h[:12]})")
                return image

    # ---- builds from steps -------------------------------------------------------------------------
    async def build(self, recipe, log: Log = _noop, backend=None) -> TemplateImage:
        """Build a template from steps (steps.BuildRecipe) and register it under recipe.name; see build.py."""
        from sandboxd.templates.build import Builder
        try:
            return await Builder(self, backend).build(recipe, log)
        except BuildFailed as exc:
            log(f"ERROR: {exc.message}")
            raise
