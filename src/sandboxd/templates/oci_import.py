"""FROM an OCI image archive a user supplies: unpack it with umoci, uid-shift it, add the agent kit.

Accepted references: `oci-archive:/path/image.tar[:tag]`, `/path/image.tar[:tag]` (a tar of an OCI layout,
as `skopeo copy ... oci-archive:` or `podman save --format oci-archive` write), and `oci:/path/layout[:tag]`
(an OCI layout directory). The unpacked rootfs is one layer, cached by the manifest digest; on top of it goes
the "agent kit" layer copied from the built-in `base` image (/opt/sandboxd with the agent's venv, and tini
when the image has none). The agent's venv runs the image's /usr/bin/python3, so the image must provide
Python 3.11 there (a Debian bookworm based image does); the build log warns when it does not.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import stat
import tarfile
from pathlib import Path

from sandboxd.core.errors import BuildFailed, Invalid, NotFound
from sandboxd.runtime.base import TemplateImage
from sandboxd.templates import layerfs
from sandboxd.templates.bases import image_env, run_logged
from sandboxd.templates.shift import shift_tree

KIT_VERSION = 1


def parse_ref(ref: str) -> tuple[Path, bool, str | None]:
    """(path, is_archive, tag) from an OCI reference."""
    is_archive = not ref.startswith("oci:")
    body = ref.split(":", 1)[1] if ref.startswith(("oci-archive:", "oci:")) else ref
    tag = None
    head, _, maybe_tag = body.rpartition(":")
    if head and "/" not in maybe_tag:
        body, tag = head, maybe_tag
    path = Path(body)
    if not path.exists():
        raise NotFound(f"OCI image {path} does not exist", code="image_not_found")
    if path.is_dir():
        is_archive = False
    return path, is_archive, tag


def _read_index(path: Path, is_archive: bool) -> dict:
    try:
        if is_archive:
            with tarfile.open(path) as tar:
                member = tar.extractfile("index.json") or tar.extractfile("./index.json")
                return json.loads(member.read()) if member else {}
        return json.loads((path / "index.json").read_text())
    except (KeyError, OSError, ValueError, tarfile.TarError) as exc:
        raise Invalid(f"{path} is not an OCI image layout/archive (no readable index.json): {exc}",
                      code="invalid_image") from exc


def _pick_manifest(index: dict, tag: str | None) -> tuple[str, str]:
    manifests = index.get("manifests") or []
    if not manifests:
        raise Invalid("the OCI index lists no manifests", code="invalid_image")
    for m in manifests:
        name = (m.get("annotations") or {}).get("org.opencontainers.image.ref.name")
        if tag is None or name == tag:
            return m["digest"], name or ""
    raise NotFound(f"tag {tag!r} is not in the OCI image", code="image_not_found")


def _image_meta(config: dict) -> dict:
    """env/workdir/user from the runtime config umoci generated out of the image config."""
    process = config.get("process") or {}
    env = dict(image_env())
    for item in process.get("env") or []:
        k, _, v = item.partition("=")
        if k and k not in ("HOME", "HOSTNAME", "TERM"):
            env[k] = v
    # Our user Python environment is not in a foreign image; keep its PATH, add the standard dirs.
    uid = (process.get("user") or {}).get("uid", 0)
    return {"env": env, "workdir": process.get("cwd") or "/", "user": str(uid) if uid else "root"}


async def import_oci(store, ref: str, log) -> TemplateImage:
    path, is_archive, tag = parse_ref(ref)
    if shutil.which("umoci") is None:
        raise BuildFailed("umoci is not installed (scripts/install.sh installs it)")
    digest, tag_name = _pick_manifest(_read_index(path, is_archive), tag)
    s = store.settings
    key = hashlib.sha256(json.dumps(["oci", digest, s.uid_base, s.uid_count]).encode()).hexdigest()
    if not store.has_layer(key):
        log(f"FROM {ref}: unpacking {digest[:19]} with umoci")
        staged = store.new_tmp("oci")
        try:
            layout = path
            if is_archive:
                layout = staged / "layout"
                layout.mkdir()
                await asyncio.to_thread(_extract, path, layout)
            bundle = staged / "bundle"
            await run_logged(["umoci", "unpack", "--image", f"{layout}:{tag_name}" if tag_name else str(layout),
                              str(bundle)], log, what="umoci unpack")
            meta = _image_meta(json.loads((bundle / "config.json").read_text()))
            os.rename(bundle / "rootfs", staged / "rootfs")
            shutil.rmtree(bundle, ignore_errors=True)
            shutil.rmtree(staged / "layout", ignore_errors=True)
            n = await asyncio.to_thread(shift_tree, staged / "rootfs", s.uid_base, s.uid_count)
            log(f"shifted {n} inodes to uid base {s.uid_base}")
            store.commit_layer(staged, key, {"kind": "oci", "ref": ref, "digest": digest, "image": meta})
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, staged, True)
            raise
    meta = json.loads((store.layers_dir / key / "layer.json").read_text())["image"]
    lower = [store.layer_path(key)]
    if layerfs.lookup(lower, layerfs.resolve(lower, "/usr/bin/python3")) is None:
        log("warning: this image has no /usr/bin/python3; the sandbox agent (Python 3.11) cannot start in it")
    kit_key = await _agent_kit(store, key, lower, log)
    return TemplateImage(name=f"oci-{digest.split(':')[-1][:12]}", layers=(store.layer_path(kit_key), *lower),
                         content_hash=kit_key, env=meta["env"], workdir=meta["workdir"], user=meta["user"])


def _extract(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")


async def _agent_kit(store, base_key: str, lower: list[Path], log) -> str:
    """The layer with /opt/sandboxd (the agent's venv) and tini, copied from the built-in base image."""
    base = await store.ensure_builtin("base", log)
    kit_key = hashlib.sha256(json.dumps(["kit", KIT_VERSION, base_key, base.content_hash]).encode()).hexdigest()
    if store.has_layer(kit_key):
        return kit_key
    staged = store.new_tmp("kit")
    try:
        await asyncio.to_thread(_make_kit, base.layers[0], staged / "rootfs", lower, store.settings.uid_base)
        store.commit_layer(staged, kit_key, {"kind": "agent-kit", "parent": base_key})
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, staged, True)
        raise
    return kit_key


def _make_kit(base_root: Path, rootfs: Path, lower: list[Path], uid_base: int) -> None:
    rootfs.mkdir(parents=True)
    root_ids = (uid_base, uid_base)
    layerfs.ensure_dirs(rootfs, layerfs.resolve(lower, "/opt"), lower, default_owner=root_ids)
    shutil.copytree(base_root / "opt/sandboxd", rootfs / layerfs.resolve(lower, "/opt").lstrip("/") / "sandboxd",
                    symlinks=True)
    for path in ("/workspace", "/tmp"):
        if layerfs.lookup(lower, path) is None:
            target = layerfs.ensure_dirs(rootfs, path, lower, default_owner=root_ids)
            if path == "/tmp":
                os.chmod(target, 0o1777)
    tini = layerfs.resolve(lower, "/usr/bin/tini")
    if layerfs.lookup(lower, tini) is None:
        bindir = layerfs.ensure_dirs(rootfs, str(Path(tini).parent), lower, default_owner=root_ids)
        shutil.copy2(base_root / "usr/bin/tini-static", bindir / "tini")
        os.lchown(bindir / "tini", *root_ids)
        os.chmod(bindir / "tini", stat.S_IMODE(0o755))
