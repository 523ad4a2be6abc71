"""FROM an OCI image archive a caller uploaded or the operator provides: unpack it with umoci, uid-shift it,
add the agent kit.

Builds read no host path of their choosing: an OCI image comes from an archive the caller uploaded
through an upload link (`oci-archive:upload:<files_hash>[:tag]`), or from the operator's import directory
(setting `import_dir`, SANDBOXD_IMPORT_DIR; unset = no host path at all). Other references name a path
inside it: `oci-archive:<path>[:tag]`, `<path>[:tag]` when it starts with `/` (a tar of an OCI layout, as
`skopeo copy ... oci-archive:` or `podman save --format oci-archive` write), and `oci:<path>[:tag]` (an OCI
layout directory). The path is resolved with openat2(RESOLVE_IN_ROOT): `/`, `..` and symlinks all stay
inside the import directory. Every error says the same thing whether a path is absent, outside, or of
the wrong type, and names no host path; umoci runs on descriptors and relative paths, and its output is
scrubbed of the data and import dirs before it reaches the build log.

The unpacked rootfs is one layer, cached by the manifest digest; on top of it goes the "agent kit" layer
copied from the built-in `base` image (tini when the image has none, and what the agent starts from). An
image with Debian's Python 3.11 on glibc (a Debian bookworm based one) runs the agent's venv, copied to
/opt/sandboxd, on its own /usr/bin/python3. Any other image (no Python, another version, musl, no libc at
all) gets the agent runtime instead (runtime/agentrt.py: glibc and Python from `base`, bound read-only at
/opt/sandboxd/rt), recorded as the template's `agent_runtime`; its kit holds the mount points only.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
from pathlib import Path

from sandboxd.errors import BuildFailed, Invalid, NotFound
from sandboxd.runtime import inroot
from sandboxd.runtime.base import LAYER_INFO, TemplateImage
from sandboxd.runtime.agentrt import ARGV as RT_ARGV, TARGET as RT_TARGET
from sandboxd.templates import agentrt, layerfs
from sandboxd.templates.bases import image_env
from sandboxd.templates.shift import shift_tree

KIT_VERSION = 1
INDEX_LIMIT = 4 * 1024 * 1024
PREFIXES = ("oci-archive:", "oci:")
UPLOAD = "upload:"  # oci-archive:upload:<files_hash>: an archive sent through an upload link
HASH_RE = re.compile(r"^[A-Za-z0-9_-]{8,128}$")  # the upload links' files_hash
FS_TIMEOUT = 30.0
_NOT_FOUND = "OCI image not found in the import directory (OCI paths are relative to it)"


def is_import_ref(ref: str) -> bool:
    ref = ref.strip()
    return ref.startswith(PREFIXES) or ref.startswith("/")


def parse_ref(ref: str) -> tuple[str, bool, str | None]:
    """(path inside the import dir, or `upload:<files_hash>`; is_archive; tag) from an OCI reference; the
    kind is a hint until the path is opened (a directory is a layout)."""
    ref = ref.strip()
    is_archive = not ref.startswith("oci:")
    body = ref.split(":", 1)[1] if ref.startswith(PREFIXES) else ref
    if ref.startswith("oci-archive:" + UPLOAD):
        files_hash, _, upload_tag = body.removeprefix(UPLOAD).partition(":")
        if not HASH_RE.match(files_hash):
            raise Invalid("an uploaded OCI archive is named by its files_hash", code="invalid_image")
        return UPLOAD + files_hash, True, upload_tag or None
    tag: str | None = None
    head, _, maybe_tag = body.rpartition(":")
    if head and "/" not in maybe_tag:
        body, tag = head, maybe_tag
    if not body or "\x00" in body:
        raise Invalid("an OCI reference needs a path inside the import directory", code="invalid_image")
    return body, is_archive, tag


def open_source(settings, ref: str) -> tuple[int, bool, str | None]:
    """(descriptor, is_archive, tag) of the image ref names inside the import directory. Blocking (it
    opens files): call it from a thread. The caller closes the descriptor."""
    rel, is_archive, tag = parse_ref(ref)
    if rel.startswith(UPLOAD):
        return _open_upload(settings, rel.removeprefix(UPLOAD)), True, tag
    if settings.import_dir is None:
        raise Invalid("this server imports no host paths: OCI archives come from an upload "
                      "(oci-archive:upload:<files_hash>) or the operator's import directory",
                      code="image_import_disabled")
    try:
        fd = inroot.open_in(settings.import_dir, rel, os.O_RDONLY, follow=True)
    except OSError:
        raise NotFound(_NOT_FOUND, code="image_not_found") from None
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        return fd, False, tag
    if stat.S_ISREG(mode):
        return fd, is_archive, tag
    os.close(fd)
    raise NotFound(_NOT_FOUND, code="image_not_found")


def _open_upload(settings, files_hash: str) -> int:
    """The archive a caller uploaded through an upload link (a file of the server's own uploads dir)."""
    try:
        fd = inroot.open_in(settings.data_dir / "uploads", f"{files_hash}.tar.gz", os.O_RDONLY)
    except OSError:
        raise NotFound(f"files {files_hash} were not uploaded", code="files_not_uploaded") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotFound(f"files {files_hash} were not uploaded", code="files_not_uploaded")
    return fd


def check_ref(settings, ref: str) -> None:
    """Refuse at request time a FROM naming no importable image (the same answers the build would give)."""
    fd, _, _ = open_source(settings, ref)
    os.close(fd)


def _archive(fd: int) -> tarfile.TarFile:
    fh = os.fdopen(os.dup(fd), "rb")
    fh.seek(0)
    return tarfile.open(fileobj=fh)


def _read_index(fd: int, is_archive: bool) -> dict:
    try:
        if is_archive:
            with _archive(fd) as tar:
                member = None
                for name in ("index.json", "./index.json"):
                    try:
                        info = tar.getmember(name)
                    except KeyError:
                        continue
                    if info.isfile() and info.size <= INDEX_LIMIT:
                        member = tar.extractfile(info)
                        break
                doc = json.loads(member.read()) if member else {}
        else:
            doc = json.loads(inroot.read_file(fd, "index.json", INDEX_LIMIT))
        if not isinstance(doc, dict):
            raise ValueError("index.json is not an object")
        return doc
    except (KeyError, OSError, ValueError, tarfile.TarError):
        raise Invalid("the file is not an OCI image layout/archive (no readable index.json)",
                      code="invalid_image") from None


def _pick_manifest(index: dict, tag: str | None) -> tuple[str, str]:
    manifests = index.get("manifests") or []
    if not isinstance(manifests, list) or not manifests or not all(
            isinstance(m, dict) and isinstance(m.get("digest"), str) for m in manifests):
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
    fd, is_archive, tag = await inroot.run_bounded(open_source, store.settings, ref, timeout=FS_TIMEOUT)
    return await _import_fd(store, fd, is_archive, tag, ref, log)


async def import_layout(store, layout: Path, tag: str, ref: str, log) -> TemplateImage:
    """An OCI layout directory the platform made itself (a registry pull, registry.py), by descriptor."""
    fd = os.open(layout, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    return await _import_fd(store, fd, False, tag, ref, log)


async def _import_fd(store, fd: int, is_archive: bool, tag: str | None, ref: str, log) -> TemplateImage:
    """Import the image of an open archive or layout directory; closes fd."""
    s = store.settings
    try:
        if shutil.which("umoci") is None:
            raise BuildFailed("umoci is not installed (scripts/install.sh installs it)")
        index = await inroot.run_bounded(_read_index, fd, is_archive, timeout=FS_TIMEOUT)
        digest, tag_name = _pick_manifest(index, tag)
        key = hashlib.sha256(json.dumps(["oci", digest, s.uid_base, s.uid_count]).encode()).hexdigest()
        if not store.has_layer(key):
            await _unpack(store, key, fd, is_archive, tag_name, digest, ref, log)
    finally:
        os.close(fd)
    meta = json.loads((store.layers_dir / key / LAYER_INFO).read_text())["image"]
    lower = [store.layer_path(key)]
    runtime = None
    if not await asyncio.to_thread(runs_agent_venv, lower):
        log(f"this image has no Python 3.11 on glibc for the agent: the agent runs on its own runtime, bound "
            f"read-only at {RT_TARGET}; the image's commands run on the image's own binaries")
        runtime = await agentrt.ensure(store, log)
    kit_key = await _agent_kit(store, key, lower, log, own_runtime=runtime is not None)
    return TemplateImage(name=f"oci-{digest.split(':')[-1][:12]}", layers=(store.layer_path(kit_key), *lower),
                         content_hash=kit_key, env=meta["env"], workdir=meta["workdir"], user=meta["user"],
                         agent_runtime=runtime)


# glibc's dynamic loader, as Debian's python3.11 names it (PT_INTERP) on each architecture
GLIBC_LOADER = {"x86_64": "/lib64/ld-linux-x86-64.so.2", "aarch64": "/lib/ld-linux-aarch64.so.1"}


def runs_agent_venv(lower: list[Path]) -> bool:
    """Whether the image can run the agent's venv (made by Debian bookworm's python3.11) on its own
    interpreter: Python 3.11 where Debian puts it, and glibc's loader. Files are looked up inside the image."""
    stack = inroot.Stack(lower)
    needs = ("/usr/bin/python3", "/usr/bin/python3.11", "/usr/lib/python3.11/os.py",
             GLIBC_LOADER.get(os.uname().machine, GLIBC_LOADER["x86_64"]))
    try:
        found = [stack.lookup(path, follow=True) for path in needs]
    except OSError:
        return False
    return all(e is not None and stat.S_ISREG(e.st.st_mode) for e in found)


async def _unpack(store, key: str, fd: int, is_archive: bool, tag_name: str, digest: str, ref: str, log) -> None:
    s = store.settings
    log(f"FROM {ref.strip()}: unpacking {digest[:19]} with umoci")
    staged = store.new_tmp("oci")
    pass_fds: tuple[int, ...]
    try:
        if is_archive:
            (staged / "layout").mkdir()
            await asyncio.to_thread(_extract, fd, staged / "layout")
            layout, pass_fds = "layout", ()
        else:
            layout, pass_fds = f"/proc/self/fd/{fd}", (fd,)
        image = f"{layout}:{tag_name}" if tag_name else layout
        await _umoci(["umoci", "unpack", "--image", image, "bundle"], staged, pass_fds, log,
                     hide=(staged, store.root, s.data_dir, s.import_dir))
        bundle = staged / "bundle"
        meta = _image_meta(json.loads((bundle / "config.json").read_text()))
        os.rename(bundle / "rootfs", staged / "rootfs")
        await asyncio.to_thread(shutil.rmtree, bundle, True)
        await asyncio.to_thread(shutil.rmtree, staged / "layout", True)
        dropped = await asyncio.to_thread(drop_devices, staged / "rootfs")
        if dropped:
            log(f"removed {dropped} device node(s): a sandbox gets its /dev from the runtime")
        n = await asyncio.to_thread(shift_tree, staged / "rootfs", s.uid_base, s.uid_count)
        log(f"shifted {n} inodes to uid base {s.uid_base}")
        store.commit_layer(staged, key, {"kind": "oci", "ref": ref, "digest": digest, "image": meta})
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, staged, True)
        raise


async def _umoci(argv: list[str], cwd: Path, pass_fds, log, *, hide) -> None:
    """Run umoci in cwd, streaming its output to the build log with host directories masked."""
    masks = sorted({str(p) for p in hide if p}, key=len, reverse=True)

    def scrub(line: str) -> str:
        for m in masks:
            line = line.replace(m, "<host>")
        return line

    proc = await asyncio.create_subprocess_exec(*argv, cwd=cwd, pass_fds=pass_fds, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    tail: list[str] = []
    assert proc.stdout is not None
    async for raw in proc.stdout:
        line = scrub(raw.decode(errors="replace").rstrip())
        tail = (tail + [line])[-30:]
        log(line)
    rc = await proc.wait()
    if rc != 0:
        raise BuildFailed(f"umoci unpack failed with exit code {rc}", details={"log_tail": "\n".join(tail)})


def drop_devices(rootfs: Path) -> int:
    """Remove the device nodes umoci (running as root) created from the image: in the layer store they
    would be device files any host user who can reach them might open."""
    dropped = 0
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for name in filenames + dirnames:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                os.unlink(path)
                dropped += 1
    return dropped


def _extract(fd: int, dest: Path) -> None:
    try:
        with _archive(fd) as tar:
            # The "data" filter refuses absolute paths, '..', links out of the tree and device files.
            tar.extractall(dest, filter="data")
    except tarfile.FilterError as exc:
        raise Invalid(f"the OCI archive has a member that cannot be unpacked safely: {exc.tarinfo.name!r}",
                      code="invalid_image") from None
    except (tarfile.TarError, OSError) as exc:
        raise Invalid(f"the OCI archive cannot be unpacked ({type(exc).__name__})", code="invalid_image") from None


async def _agent_kit(store, base_key: str, lower: list[Path], log, *, own_runtime: bool) -> str:
    """The layer with tini, copied from the built-in base image, and /opt/sandboxd: the agent's venv, or with
    its own runtime the mount points and the interpreter shim."""
    base = await store.ensure_builtin("base", log)
    kit_key = hashlib.sha256(json.dumps(["kit", KIT_VERSION, base_key, base.content_hash]
                                        + (["agent-runtime"] if own_runtime else [])).encode()).hexdigest()
    if store.has_layer(kit_key):
        return kit_key
    staged = store.new_tmp("kit")
    try:
        await asyncio.to_thread(_make_kit, base.layers[0], staged / "rootfs", lower, store.settings.uid_base,
                                own_runtime)
        store.commit_layer(staged, kit_key, {"kind": "agent-kit", "parent": base_key})
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, staged, True)
        raise
    return kit_key


def _make_kit(base_root: Path, rootfs: Path, lower: list[Path], uid_base: int, own_runtime: bool) -> None:
    rootfs.mkdir(parents=True)
    root_ids = (uid_base, uid_base)
    opt = layerfs.resolve(lower, "/opt")
    layerfs.ensure_dirs(rootfs, opt, lower, default_owner=root_ids)
    if own_runtime:
        _runtime_kit(rootfs / opt.lstrip("/") / "sandboxd", root_ids)
    else:
        shutil.copytree(base_root / "opt/sandboxd", rootfs / opt.lstrip("/") / "sandboxd", symlinks=True)
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


def _runtime_kit(kit: Path, root_ids: tuple[int, int]) -> None:
    """/opt/sandboxd for an image the agent runtime serves: the mount points of the runtime and the agent
    package (so a sandbox's own disk never gains them), and venv/bin/python, the interpreter scripts of the
    agent name (`sudo`): a shell script that runs the runtime's (where the image has /bin/sh)."""
    for rel in ("rt", "pkg/sandboxd", "venv/bin"):
        (kit / rel).mkdir(parents=True, exist_ok=True)
    shim = kit / "venv/bin/python"
    shim.write_text("#!/bin/sh\n# The agent's interpreter: the agent runtime's Python, through its own loader.\n"
                    f"exec {' '.join(RT_ARGV[3:8])} \"$@\"\n")
    shim.chmod(0o755)
    for dirpath, dirnames, filenames in os.walk(kit):
        for name in ["", *dirnames, *filenames]:
            os.lchown(os.path.join(dirpath, name), *root_ids)
