"""Helpers shared by the runtime, security and conformance suites (real sandboxes).

Templates come from the image store at settings.templates_dir (SANDBOXD_TEMPLATES_PATH or
/var/lib/sandboxd/templates), through the TemplateStore; the `base` image is used.
Data dirs are short paths under /tmp because the agent socket path must fit sun_path (108 bytes).
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from sandboxd.config import Settings
from sandboxd.runtime import cgroups, network
from sandboxd.runtime.base import Resources, SandboxSpec, TemplateImage
from support.real import require_real

PREFIX = "rt"


def make_settings(backend: str = "crun") -> Settings:
    data = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-", dir="/tmp"))
    # One shared image store, like tests/conftest.py: SANDBOXD_TEMPLATES_PATH or the default data dir's.
    templates = os.environ.get("SANDBOXD_TEMPLATES_PATH") or "/var/lib/sandboxd/templates"
    return Settings(data_dir=data, backend=backend, templates_path=Path(templates))


def base_image(settings: Settings) -> TemplateImage:
    from sandboxd.templates.store import TemplateStore

    return TemplateStore(settings).get("base")


def new_id(tag: str = "") -> str:
    return f"{PREFIX}-{tag}{'-' if tag else ''}{uuid.uuid4().hex[:8]}"


def spec(image: TemplateImage, tag: str = "", **kw) -> SandboxSpec:
    res = kw.pop("resources", Resources(vcpu=1.0, memory_mb=512, disk_mb=256, pids=256))
    return SandboxSpec(id=new_id(tag), image=image, resources=res, **kw)


class SyncBackend:
    """Drives an async backend from sync tests (module-scoped fixtures), on one private event loop."""

    def __init__(self, backend):
        self.backend = backend
        self.loop = asyncio.new_event_loop()

    def __getattr__(self, name):
        attr = getattr(self.backend, name)
        if not callable(attr) or not asyncio.iscoroutinefunction(attr):
            return attr
        return lambda *a, **kw: self.loop.run_until_complete(attr(*a, **kw))

    def sh(self, sandbox_id: str, script: str, **kw):
        return self.exec(sandbox_id, ["sh", "-c", script], **kw)

    def py(self, sandbox_id: str, code: str, **kw):
        return self.exec(sandbox_id, ["python3", "-c", code], **kw)

    def close(self) -> None:
        self.loop.close()


def _mounts() -> list[str]:
    return Path("/proc/self/mounts").read_text().splitlines()


def leftovers(settings: Settings, sandbox_id: str) -> list[str]:
    """Everything a destroyed sandbox may have left on this host; empty when it is all released."""
    found = []
    d = Path(settings.sandboxes_dir) / sandbox_id
    if d.exists():
        found.append(f"dir {d}")
    found += [f"mount {m.split()[1]}" for m in _mounts() if str(d) in m]
    found += _loops(d)
    cg = cgroups.SandboxCgroup(sandbox_id)
    found += [f"cgroup {p}" for p in cg.dirs() if p.exists()]
    found += network.leftovers(sandbox_id)
    return found


def _loops(d: Path, wait: float = 5.0) -> list[str]:
    """Loop devices still backed by a file under d. Autoclear lets a device go a moment after its filesystem's
    last user, from a kernel work queue (runtime/loopdev.py): a loaded host can still list one just after a
    destroy returned, so only one that stays is a leftover."""
    deadline = time.monotonic() + wait
    while True:
        loops = json.loads(subprocess.run(["losetup", "-l", "-J"], capture_output=True, text=True).stdout or "{}")
        held = [f"loop {lo['name']}" for lo in loops.get("loopdevices", []) if str(d) in (lo.get("back-file") or "")]
        if not held or time.monotonic() >= deadline:
            return held
        time.sleep(0.05)


def cleanup(settings: Settings, sb: SyncBackend) -> None:
    for d in list(Path(settings.sandboxes_dir).glob("*")) if Path(settings.sandboxes_dir).is_dir() else []:
        try:
            sb.destroy(d.name)
        except Exception:
            pass
    shutil.rmtree(settings.data_dir, ignore_errors=True)
    runtime_root = getattr(getattr(sb.backend, "cli", None), "root", None)
    if runtime_root is not None:
        shutil.rmtree(runtime_root.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def rt_env():
    """(settings, backend, base image) for one module; everything it made is destroyed afterwards."""
    require_real()
    from sandboxd.runtime import get_backend

    settings = make_settings("crun")
    sb = SyncBackend(get_backend(settings))
    try:
        yield settings, sb, base_image(settings)
    finally:
        cleanup(settings, sb)
        sb.close()
