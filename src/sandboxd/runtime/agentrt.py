"""The agent's own runtime, for images that cannot run the agent on their interpreter (no Python, another
Python, musl instead of glibc): a tree made from the built-in `base` image (glibc's loader and the libraries
Python needs, Python 3.11 with its standard library, the agent's venv), bound read-only at TARGET in the
sandbox, as E2B injects its envd.

The agent starts through the tree's own dynamic loader (`ARGV`): `--library-path` and `--inhibit-cache`
are arguments of that one process, so nothing of the image's libc is loaded and nothing is left in the
environment of the processes the agent starts (they run the image's own binaries).

The tree is a layer of the template store (kind AGENT_RUNTIME, templates/agentrt.py makes it). Sandboxes bind
it from one read-only overlay of it per host (`/run/sandboxd/rt/<key>`, mounted on first use): a mount of its
own, so a sandbox's mountinfo shows `overlay` at TARGET and no host path. The key names the layer directory
itself (its path and inode), so a layer removed and made again, or one of another data dir, is mounted anew;
a mount no sandbox on the host binds (their config.json, found through the uid range claims) is taken down
when another is made, once unused for STALE_SECONDS or once its layer is gone (its marker names the layer). Its files belong to host root (a sandbox sees nobody:nogroup, like the agent
package's) and are world-readable.
"""
from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import time
from pathlib import Path

from sandboxd.runtime import idmap, uidslots

TARGET = "/opt/sandboxd/rt"
LOADER = "lib/ld.so"  # the tree's dynamic loader, under a name that does not depend on the architecture
LIBS = "lib"
PYTHON = "venv/bin/python"
AGENT_RUNTIME = "agent-runtime"  # the layer record's kind
ROOT = Path("/run/sandboxd/rt")
MS_RDONLY, MS_NOSUID, MS_NODEV = 1, 2, 4
MNT_DETACH = 2
STALE_SECONDS = 3600.0  # a mount made or used this recently may be about to be bound by a create
_libc = ctypes.CDLL(None, use_errno=True)

ARGV = ["/usr/bin/tini", "-g", "--", f"{TARGET}/{LOADER}", "--inhibit-cache", "--library-path", f"{TARGET}/{LIBS}",
        f"{TARGET}/{PYTHON}", "-I", "-m", "sandboxd.agent"]


def _identity(layer: Path | str) -> str:
    st = os.stat(layer)
    return f"{layer}\0{st.st_dev}\0{st.st_ino}"


def _key(layer: Path) -> str:
    return hashlib.sha256(_identity(layer).encode()).hexdigest()[:16]


def mounted(layer: Path) -> Path | None:
    """The host mount of the runtime layer when it is there, marked used (a few syscalls: fit for the event
    loop)."""
    dest = ROOT / _key(layer)
    try:
        if os.stat(dest).st_dev == os.stat(ROOT).st_dev:
            return None
        os.utime(ROOT / f".{dest.name}.used")
        return dest
    except FileNotFoundError:
        return None


def mount_for_sandboxes(layer: Path) -> Path:
    """The read-only host mount of the runtime layer (a layer dir's rootfs), made now if missing. Blocking."""
    ROOT.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(ROOT / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        dest = mounted(layer)
        if dest is not None:
            return dest
        dest = ROOT / _key(layer)
        dest.mkdir(exist_ok=True)
        # A lower-only overlay is read-only but needs two lower dirs: the second is an empty one.
        empty = ROOT / ".empty"
        empty.mkdir(exist_ok=True)
        if idmap.overlay_by_fd():
            _mount_by_fd(layer, empty, dest)
        else:
            _mount_by_path(layer, empty, dest)
        (ROOT / f".{dest.name}.used").write_text(_identity(layer))
        _prune(keep=dest.name)
        return dest


def _mount_by_fd(layer: Path, empty: Path, dest: Path) -> None:
    fds = [idmap.clone(str(p), attrs=idmap.HOST_SAFE | idmap.MOUNT_ATTR_RDONLY) for p in (layer, empty)]
    try:
        mfd = idmap.overlay(fds, None, None, attrs=idmap.HOST_SAFE | idmap.MOUNT_ATTR_RDONLY)
        try:
            idmap.attach(mfd, str(dest))
        finally:
            os.close(mfd)
    finally:
        for fd in fds:
            os.close(fd)


def _mount_by_path(layer: Path, empty: Path, dest: Path) -> None:
    """Before Linux 6.13: the layer is attached at a short path first, so the overlay's options (which the
    sandbox's mountinfo shows) name /run/sandboxd/rt/.l/..., not the template store."""
    short = ROOT / ".l" / dest.name
    short.mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(short):
        idmap.bind_view(str(layer), str(short), attrs=idmap.HOST_SAFE | idmap.MOUNT_ATTR_RDONLY)
    idmap.overlay_paths([str(short), str(empty)], None, None, str(dest),
                        MS_RDONLY | MS_NOSUID | MS_NODEV)


def _in_use() -> set[str]:
    """The mounts a sandbox on this host binds (any data dir), by their key."""
    used: set[str] = set()
    for record in uidslots.claimed_dirs_records():
        try:
            mounts = json.loads((record.parent / "config.json").read_text())["mounts"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        used.update(Path(m["source"]).name for m in mounts
                    if isinstance(m, dict) and m.get("destination") == TARGET and str(m.get("source")).startswith(f"{ROOT}/"))
    return used


def _recent(marker: Path, cutoff: float) -> bool:
    """Whether a mount's marker says it was used after cutoff, of a layer directory that is still there."""
    try:
        identity = marker.read_text()
        return marker.stat().st_mtime > cutoff and _identity(identity.split("\0")[0]) == identity
    except OSError:
        return False


def _prune(keep: str) -> None:
    used = _in_use() | {keep}
    cutoff = time.time() - STALE_SECONDS
    for d in ROOT.iterdir():
        marker = ROOT / f".{d.name}.used"
        if d.name.startswith(".") or d.name in used or _recent(marker, cutoff):
            continue
        marker.unlink(missing_ok=True)
        for target in (d, ROOT / ".l" / d.name):
            if os.path.ismount(target):
                _libc.umount2(os.fsencode(str(target)), MNT_DETACH)
            try:
                target.rmdir()
            except OSError:
                pass


__all__ = ["TARGET", "ARGV", "AGENT_RUNTIME", "mounted", "mount_for_sandboxes"]
