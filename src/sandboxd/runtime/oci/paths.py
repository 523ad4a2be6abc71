"""Where a sandbox's host-side paths live, and the per-data-dir runtime dir under /run/sandboxd.

Normally everything is under `<data_dir>/sandboxes/<id>/`. Two things cannot always be there:

- the agent socket: a unix socket path must fit sun_path (108 bytes with its NUL). When
  `<sandbox dir>/agent.sock` is too long, it goes to `/run/sandboxd/<tag>/sock/<id>`.
- the container's root mount point: crun resolves it from inside the user namespace, as the sandbox's
  root (the first host uid of its own range, uidslots.py), so every directory on its path must be
  searchable by that uid. A data dir under a 0700 directory we do not own (pytest's tmp_path, a home dir)
  would fail with crun's "make rootfs private: Permission denied"; the root then gets its mount point at
  `/run/sandboxd/<tag>/root/<id>/rootfs`, whose parents we create searchable. Only the mount point moves:
  the overlay's layers and upper dir are opened by the host (the mounter), and bind sources are opened by
  the runtime before it enters the namespace.

The directory right above a sandbox's root (its sandbox dir, or `root/<id>` under /run) is root's, group
the sandbox's root gid, mode 0710 (sandbox_dir): the sandbox's root can pass through it, no other host
user can, so nothing of a sandbox (its setuid files, its disk) is reachable by another uid on the host.

Both chosen paths are recorded in the sandbox's state.json, so a later change of the data dir's modes
never loses a running sandbox.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

RUN_ROOT = Path("/run/sandboxd")
SUN_PATH_MAX = 107  # sizeof(sun_path) - the terminating NUL


def tag(data_dir: Path) -> str:
    return hashlib.sha1(str(data_dir).encode()).hexdigest()[:12]


def runtime_dir(data_dir: Path) -> Path:
    """The data dir's own folder under /run/sandboxd: runtime state root, short sockets, mount points."""
    return RUN_ROOT / tag(data_dir)


def socket_path(data_dir: Path, sandbox_dir: Path, sandbox_id: str) -> Path:
    p = sandbox_dir / "agent.sock"
    if len(os.fsencode(str(p))) <= SUN_PATH_MAX:
        return p
    return runtime_dir(data_dir) / "sock" / sandbox_id


def rootfs_path(data_dir: Path, sandbox_dir: Path, sandbox_id: str, uid: int) -> Path:
    if blocking_dir(sandbox_dir, uid) is None:
        return sandbox_dir / "rootfs"
    return runtime_dir(data_dir) / "root" / sandbox_id / "rootfs"


def layers_path(sandbox_dir: Path) -> Path:
    """Where the idmapped layers of a sandbox's overlay are attached on kernels that cannot give them by fd
    (rootfs.py): short, since the overlay's options name each one and must fit a page."""
    return RUN_ROOT / tag(sandbox_dir.parent) / "l" / sandbox_dir.name


def sandbox_dir(path: Path, gid: int) -> None:
    """Make path (created if missing) a directory only host root and the sandbox's root (gid) may pass."""
    path.mkdir(exist_ok=True)
    os.chown(path, 0, gid)
    os.chmod(path, 0o710)


def searchable_by(st: os.stat_result, uid: int) -> bool:
    """Can uid (with gid == uid, as our id mapping gives) search a directory with this stat? Root's
    capabilities do not count: inside its user namespace the sandbox's root has none over host files."""
    mode = st.st_mode
    if st.st_uid == uid:
        return bool(mode & stat.S_IXUSR)
    if st.st_gid == uid:
        return bool(mode & stat.S_IXGRP)
    return bool(mode & stat.S_IXOTH)


def blocking_dir(path: Path, uid: int) -> Path | None:
    """The first directory on path (from /) that uid cannot search, or None. Missing parts count as
    searchable: we create them (0755 by the umask, then made o+x by prepare_host)."""
    p = Path(os.path.abspath(path))
    for d in [*reversed(p.parents), p]:
        try:
            st = os.stat(d)
        except FileNotFoundError:
            return None
        if not searchable_by(st, uid):
            return d
    return None


def make_dir(path: Path) -> None:
    """mkdir -p under RUN_ROOT with every level searchable by the sandbox's uid (o+x, no listing)."""
    if RUN_ROOT not in path.parents:
        raise ValueError(f"{path} is not under {RUN_ROOT}")  # never chmod anything that is not ours
    path.mkdir(parents=True, exist_ok=True)
    for d in [path, *path.parents]:
        if d == RUN_ROOT.parent:
            break
        if d.stat().st_mode & 0o001 == 0:
            os.chmod(d, (d.stat().st_mode & 0o7777) | 0o011)


def remove_empty(data_dir: Path) -> list[Path]:
    """rmdir the data dir's runtime folders under /run/sandboxd that are empty; returns what went.
    Safe against a concurrent create: crun and runc re-create their state root, and the backend creates
    the socket and mount point folders right before use."""
    base = runtime_dir(data_dir)
    gone: list[Path] = []
    if not base.is_dir():
        return gone
    for d in sorted((p for p in base.iterdir() if p.is_dir()), reverse=True):
        try:
            os.rmdir(d)
            gone.append(d)
        except OSError:
            pass  # not empty: something still lives there
    try:
        os.rmdir(base)
        gone.append(base)
    except OSError:
        pass
    return gone


__all__ = ["RUN_ROOT", "tag", "runtime_dir", "socket_path", "rootfs_path", "layers_path", "sandbox_dir", "blocking_dir",
           "searchable_by", "make_dir", "remove_empty"]


def tail(path: Path, size: int = 4000) -> bytes:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(fh.seek(0, os.SEEK_END) - size, 0))
            return fh.read()
    except OSError:
        return b""


def remove_dir(path: Path) -> None:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
