"""The agent package as sandboxes mount it: a copy in a small tmpfs of its own, `/run/sandboxd/pkg`.

Why a copy: a sandbox's /proc/self/mountinfo shows, for a bind mount, the source's path from the root of the
source's filesystem. Bound from where it is installed, the package named the host's install path (a home
dir, a checkout, a venv); from this tmpfs it reads `/<version>/sandboxd`.

One tmpfs for the host, shared by every daemon and data dir: `<version>` is a digest of the package files'
names, sizes and mtimes, so two daemons of one version share a copy and an upgrade adds its own next to the
old one. Each create touches its version's dir; a version no sandbox on the host binds (their config.json,
found through the uid range claims) and untouched for STALE_SECONDS is removed when a copy is made. The
tmpfs lives until the host reboots, like the claims.
"""
from __future__ import annotations

import ctypes
import fcntl
import functools
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from sandboxd.runtime import uidslots

ROOT = Path("/run/sandboxd/pkg")
# A few MiB per version. Searchable by anyone, listable by root only: a memory restore binds the package from
# inside the sandbox's user namespace (runtime/oci/memory.py), as the sandbox's root; it holds only the agent's code.
TMPFS_OPTIONS = b"size=256m,mode=0711"
STALE_SECONDS = 3600.0
_libc = ctypes.CDLL(None, use_errno=True)
MS_NOSUID, MS_NODEV = 2, 4


@functools.cache
def version(pkg: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(pkg)):
        dirnames.sort()
        for name in sorted(filenames):
            st = os.lstat(os.path.join(dirpath, name))
            rel = os.path.relpath(os.path.join(dirpath, name), pkg)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def ready(pkg: Path) -> Path | None:
    """The copy of pkg when it is there (its version dir touched: one syscall, fit for the event loop)."""
    dest = ROOT / version(pkg) / pkg.name
    try:
        os.utime(dest.parent)
        return dest
    except FileNotFoundError:
        return None


def copy_for_sandboxes(pkg: Path, target: str) -> Path:
    """The copy of pkg to bind at target in sandboxes, made now if missing (blocking: run it in a thread)."""
    dest = ready(pkg)
    if dest is not None:
        return dest
    dest = ROOT / version(pkg) / pkg.name
    _mount_root()
    with open(ROOT / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not dest.is_dir():
            staged = ROOT / f".{dest.parent.name}.{os.getpid()}"
            shutil.rmtree(staged, ignore_errors=True)
            shutil.copytree(pkg, staged / pkg.name, symlinks=True)
            os.rename(staged, dest.parent)
        _prune(keep=dest.parent.name, target=target)
    return dest


def _mount_root() -> None:
    ROOT.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open("/proc/self/mounts") as fh:
        if any(line.split()[1] == str(ROOT) for line in fh):
            os.chmod(ROOT, 0o711)  # mounted by an older version as 0700
            return
    if _libc.mount(b"tmpfs", os.fsencode(str(ROOT)), b"tmpfs", MS_NOSUID | MS_NODEV, TMPFS_OPTIONS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mounting the agent package tmpfs: {os.strerror(err)}")


def _in_use(target: str) -> set[str]:
    """The versions bound by a sandbox on this host (any data dir): their config.json name the source."""
    used = set()
    for record in uidslots.claimed_dirs_records():
        try:
            mounts = json.loads((record.parent / "config.json").read_text())["mounts"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for m in mounts:
            src = Path(m.get("source", ""))
            if m.get("destination") == target and src.is_relative_to(ROOT):
                used.add(src.relative_to(ROOT).parts[0])
    return used


def _prune(keep: str, target: str) -> None:
    used = _in_use(target) | {keep}
    cutoff = time.time() - STALE_SECONDS
    for d in ROOT.iterdir():
        if d.name in used or d.name == ".lock":
            continue
        try:
            if d.stat().st_mtime < cutoff:
                shutil.rmtree(d)
        except FileNotFoundError:
            pass


__all__ = ["ROOT", "version", "ready", "copy_for_sandboxes"]
