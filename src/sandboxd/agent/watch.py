"""Recursive directory watching with inotify (through ctypes: no dependency, nothing to build)."""
from __future__ import annotations

import asyncio
import os
import struct
from dataclasses import dataclass
from typing import Any

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_ISDIR, IN_Q_OVERFLOW, IN_IGNORED = 0x400, 0x800, 0x40000000, 0x4000, 0x8000
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF
HEADER = struct.Struct("iIII")
MAX_WATCHES = 8192

_libc = None


def _lib():
    global _libc
    if _libc is None:
        import ctypes
        import ctypes.util

        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


class Watcher:
    """Yields (event, path) with event in created|modified|deleted|renamed."""

    def __init__(self, root: str, recursive: bool = True):
        self.root, self.recursive = root, recursive
        self.fd = _lib().inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            import ctypes

            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.paths: dict[int, str] = {}
        self.queue: asyncio.Queue = asyncio.Queue()
        self._add_tree(root)
        asyncio.get_running_loop().add_reader(self.fd, self._on_readable)

    def _add(self, path: str) -> None:
        if len(self.paths) >= MAX_WATCHES:
            return
        wd = _lib().inotify_add_watch(self.fd, os.fsencode(path), MASK)
        if wd >= 0:
            self.paths[wd] = path

    def _add_tree(self, path: str) -> None:
        self._add(path)
        if not self.recursive:
            return
        for dirpath, dirnames, _ in os.walk(path):
            for d in dirnames:
                self._add(os.path.join(dirpath, d))

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        off = 0
        while off + HEADER.size <= len(data):
            wd, mask, _cookie, length = HEADER.unpack_from(data, off)
            name = data[off + HEADER.size: off + HEADER.size + length].rstrip(b"\0").decode(errors="replace")
            off += HEADER.size + length
            base = self.paths.get(wd)
            if mask & IN_IGNORED:
                self.paths.pop(wd, None)
                continue
            if base is None:
                continue
            path = os.path.join(base, name) if name else base
            if mask & IN_CREATE:
                if mask & IN_ISDIR and self.recursive:
                    self._add_tree(path)
                self.queue.put_nowait(("created", path))
            elif mask & (IN_MODIFY | IN_CLOSE_WRITE):
                self.queue.put_nowait(("modified", path))
            elif mask & (IN_DELETE | IN_DELETE_SELF):
                self.queue.put_nowait(("deleted", path))
            elif mask & (IN_MOVED_FROM | IN_MOVED_TO):
                if mask & IN_MOVED_TO and mask & IN_ISDIR and self.recursive:
                    self._add_tree(path)
                self.queue.put_nowait(("renamed", path))

    async def next(self) -> tuple[str, str]:
        return await self.queue.get()

    def close(self) -> None:
        if self.fd >= 0:
            try:
                asyncio.get_running_loop().remove_reader(self.fd)
            except RuntimeError:
                pass
            os.close(self.fd)
            self.fd = -1


# Filesystems whose changes can come from other machines, unseen by inotify (fuse: sshfs, s3fs, ...).
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "afs", "fuse")


def network_filesystem(path: str, mounts: str = "/proc/self/mounts") -> str | None:
    """The type of the network filesystem `path` lies on, or None (also when the mount table is unreadable)."""
    try:
        with open(mounts) as f:
            table = [line.split()[1:3] for line in f if len(line.split()) > 2]
    except OSError:
        return None
    real, best, fstype = os.path.realpath(path), "", ""
    for point, kind in table:
        point = point.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, kind
    base = fstype.split(".", 1)[0]  # fuse.sshfs -> fuse
    return fstype if base in NETWORK_FILESYSTEMS and fstype != "fuse.fuse-overlayfs" else None


MAX_PENDING = 10000  # changes a polled watch keeps before its reader comes back; later ones are dropped


@dataclass
class Change:
    kind: str  # created | modified | deleted | renamed
    path: str
    name: str  # relative to the watched directory
    entry: Any = None  # the files service's Entry, when asked for and the path still exists


class DirWatch:
    """A watch on one directory, read change by change (`next`) or collected for a poller (`take`)."""

    def __init__(self, root: str, recursive: bool, with_entries: bool):
        self.root, self.recursive, self.with_entries = root, recursive, with_entries
        self.watcher = Watcher(root, recursive)
        self.pending: list[Change] = []
        self._collector: asyncio.Task | None = None

    async def next(self) -> list[Change]:
        kind, path = await self.watcher.next()
        return self._changes(kind, path)

    def _changes(self, kind: str, path: str) -> list[Change]:
        """The change, plus `created` for whatever already sits inside a new directory: files made right
        after their directory land before its inotify watch exists, and would otherwise be missed."""
        out = [self._change(kind, path)]
        if kind == "created" and self.recursive and os.path.isdir(path) and not os.path.islink(path):
            for dirpath, dirnames, filenames in os.walk(path):
                for n in dirnames + filenames:
                    out.append(self._change("created", os.path.join(dirpath, n)))
                    if len(out) > 1000:
                        return out
        return out

    def _change(self, kind: str, path: str) -> Change:
        ch = Change(kind, path, os.path.relpath(path, self.root))
        if self.with_entries and kind != "deleted":
            from .files import entry

            try:
                ch.entry = entry(path)
            except OSError:
                pass  # gone again already
        return ch

    def collect(self) -> None:
        """Keep changes for `take` from now on."""
        self._collector = asyncio.get_running_loop().create_task(self._collect())

    async def _collect(self) -> None:
        while True:
            changes = await self.next()
            if len(self.pending) < MAX_PENDING:
                self.pending.extend(changes)

    def take(self) -> list[Change]:
        changes, self.pending = self.pending, []
        return changes

    def close(self) -> None:
        if self._collector is not None:
            self._collector.cancel()
        self.watcher.close()
