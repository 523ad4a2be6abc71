"""The volume content API's file operations on the host (docs/e2b.md#volumes). Blocking: callers run them in
a thread.

A volume's dir is written by sandboxes, so everything in it is hostile: a path is walked one component at
a time from an fd of the volume's root with O_NOFOLLOW (a symlink anywhere on the way is refused, never
followed, so nothing outside the volume is reached, whatever a sandbox renames meanwhile); the last
component is looked at with lstat and opened with O_NOFOLLOW | O_NONBLOCK (a FIFO neither blocks nor is
read: only regular files are); '..' is refused outright. Ids are the store's convention (core/volumes.py):
the API's uid n is host uid_base + n.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from sandboxd.core.models import iso
from sandboxd.errors import Conflict, Invalid, NotFound

MAX_DEPTH = 16
MAX_ENTRIES = 10_000
CHUNK = 256 * 1024
OVERFLOW_ID = 65534  # what a sandbox sees for an id outside its range
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


def parts(path: Any) -> list[str]:
    """A path in the volume -> its components; '/' and '' are the volume's root."""
    if not isinstance(path, str) or "\0" in path or len(path) > 4096:
        raise Invalid("path must be a string without NUL bytes", code="invalid_path")
    out = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in out:
        raise Invalid(f"path {path!r} must not contain '..'", code="invalid_path")
    return out


def _oserror(exc: OSError, path: str) -> Exception:
    if exc.errno in (errno.ENOENT,):
        return NotFound(f"path {path} not found", code="path_not_found")
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return Invalid(f"path {path} crosses a symlink or a file", code="invalid_path")
    if exc.errno == errno.EEXIST:
        return Conflict(f"path {path} already exists", code="path_exists")
    if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.ENXIO, errno.EINVAL, errno.ENAMETOOLONG):
        return Invalid(f"path {path}: {os.strerror(exc.errno)}", code="invalid_path")
    return exc


@dataclass(frozen=True)
class Ids:
    base: int
    count: int

    def api(self, host: int) -> int:
        return host - self.base if self.base <= host < self.base + self.count else OVERFLOW_ID

    def host(self, n: int | None, default: int) -> int:
        n = default if n is None else n
        if not 0 <= n < self.count:
            raise Invalid(f"uid/gid {n} is outside 0..{self.count - 1}", code="invalid_owner")
        return self.base + n


class VolumeFiles:
    """One volume's tree, opened from its root dir (which the volume service made)."""

    def __init__(self, root: Path, ids: Ids, default_owner: int):
        self.root = root
        self.ids = ids
        self.owner = default_owner

    @contextlib.contextmanager
    def _dir(self, comps: list[str], path: str, create: bool = False, uid: int | None = None,
             gid: int | None = None, mode: int | None = None) -> Iterator[int]:
        """An fd of the dir these components name; with create, missing ones are made (owned as asked)."""
        try:
            fd = os.open(self.root, DIR_FLAGS)
        except OSError as exc:
            raise NotFound("volume has no files on this host", code="volume_not_found") from exc
        try:
            for c in comps:
                try:
                    nxt = os.open(c, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    self._mkdir(fd, c, uid, gid, mode)
                    nxt = os.open(c, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
            yield fd
        except OSError as exc:
            raise _oserror(exc, path) from exc
        finally:
            os.close(fd)

    def _mkdir(self, parent: int, name: str, uid: int | None, gid: int | None, mode: int | None) -> None:
        os.mkdir(name, 0o700, dir_fd=parent)
        fd = os.open(name, DIR_FLAGS, dir_fd=parent)
        try:
            self._own(fd, uid, gid, 0o755 if mode is None else mode)
        finally:
            os.close(fd)

    def _own(self, fd: int, uid: int | None, gid: int | None, mode: int | None) -> None:
        if uid is not None or gid is not None or os.geteuid() == 0:
            with contextlib.suppress(PermissionError):  # not root: the fake backend's host, its own ids
                os.fchown(fd, self.ids.host(uid, self.owner), self.ids.host(gid, self.owner))
        if mode is not None:
            os.fchmod(fd, mode & 0o7777)

    def _entry(self, st: os.stat_result, name: str, path: str, target: str | None = None) -> dict[str, Any]:
        kind = ("directory" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode)
                else "symlink" if stat.S_ISLNK(st.st_mode) else "unknown")
        out = {"name": name, "type": kind, "path": path, "size": st.st_size, "mode": stat.S_IMODE(st.st_mode),
               "uid": self.ids.api(st.st_uid), "gid": self.ids.api(st.st_gid),
               "atime": _time(st.st_atime), "mtime": _time(st.st_mtime), "ctime": _time(st.st_ctime)}
        if target is not None:
            out["target"] = target
        return out

    def _stat_in(self, parent: int, name: str, path: str) -> dict[str, Any]:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        target = os.readlink(name, dir_fd=parent) if stat.S_ISLNK(st.st_mode) else None
        return self._entry(st, name, path, target)

    def stat(self, path: str) -> dict[str, Any]:
        comps = parts(path)
        shown = "/" + "/".join(comps)
        if not comps:
            with self._dir([], shown) as fd:
                return self._entry(os.fstat(fd), "/", "/")
        with self._dir(comps[:-1], shown) as parent:
            try:
                return self._stat_in(parent, comps[-1], shown)
            except OSError as exc:
                raise _oserror(exc, shown) from exc

    def list_dir(self, path: str, depth: int = 1) -> list[dict[str, Any]]:
        if not 1 <= depth <= MAX_DEPTH:
            raise Invalid(f"depth must be 1..{MAX_DEPTH}", code="invalid_depth")
        comps = parts(path)
        shown = "/" + "/".join(comps)
        out: list[dict[str, Any]] = []
        with self._dir(comps, shown) as fd:
            try:
                self._walk(fd, shown.rstrip("/"), depth, out)
            except OSError as exc:
                raise _oserror(exc, shown) from exc
        return out

    def _walk(self, fd: int, base: str, depth: int, out: list[dict[str, Any]]) -> None:
        for name in sorted(os.listdir(fd)):
            if len(out) >= MAX_ENTRIES:
                raise Invalid(f"more than {MAX_ENTRIES} entries; list a smaller tree", code="too_many_entries")
            try:
                entry = self._stat_in(fd, name, f"{base}/{name}")
            except FileNotFoundError:
                continue  # removed meanwhile
            out.append(entry)
            if entry["type"] == "directory" and depth > 1:
                try:
                    sub = os.open(name, DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue  # replaced by a symlink or removed meanwhile: not followed
                try:
                    self._walk(sub, f"{base}/{name}", depth - 1, out)
                finally:
                    os.close(sub)

    def open_file(self, path: str) -> tuple[int, int]:
        """(fd, size) of a regular file to read; the caller closes the fd."""
        comps = parts(path)
        shown = "/" + "/".join(comps)
        if not comps:
            raise Invalid("path names the volume's root, not a file", code="not_a_file")
        with self._dir(comps[:-1], shown) as parent:
            try:
                fd = os.open(comps[-1], FILE_FLAGS, dir_fd=parent)
            except OSError as exc:
                raise _oserror(exc, shown) from exc
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise Invalid(f"path {shown} is not a regular file", code="not_a_file")
        return fd, st.st_size

    def make_dir(self, path: str, uid: int | None, gid: int | None, mode: int | None, force: bool) -> dict[str, Any]:
        """force: make missing parents too, and an existing dir is no error."""
        comps = parts(path)
        shown = "/" + "/".join(comps)
        if not comps:
            raise Conflict("the volume's root exists", code="path_exists")
        with self._dir(comps[:-1], shown, create=force, uid=uid, gid=gid, mode=mode) as parent:
            try:
                self._mkdir(parent, comps[-1], uid, gid, mode)
            except FileExistsError:
                st = os.stat(comps[-1], dir_fd=parent, follow_symlinks=False)
                if not (force and stat.S_ISDIR(st.st_mode)):
                    raise Conflict(f"path {shown} already exists", code="path_exists") from None
            except OSError as exc:
                raise _oserror(exc, shown) from exc
            return self._stat_in(parent, comps[-1], shown)

    def begin_write(self, path: str, uid: int | None, gid: int | None, mode: int | None,
                    force: bool | None) -> "Upload":
        """A new file written aside and renamed over the path at commit (a symlink there is replaced, never
        followed). force=False: an existing path is a conflict; missing parent dirs are made."""
        comps = parts(path)
        shown = "/" + "/".join(comps)
        if not comps:
            raise Invalid("path names the volume's root, not a file", code="not_a_file")
        with self._dir(comps[:-1], shown, create=True, uid=uid, gid=gid) as parent:
            pfd = os.dup(parent)
        try:
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(comps[-1], dir_fd=pfd, follow_symlinks=False)
                if force is False or stat.S_ISDIR(st.st_mode):
                    raise Conflict(f"path {shown} already exists", code="path_exists")
            tmp = f".upload-{secrets.token_hex(8)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd)
            try:
                self._own(fd, uid, gid, 0o644 if mode is None else mode)
            except BaseException:
                os.close(fd)
                os.unlink(tmp, dir_fd=pfd)
                raise
        except BaseException:
            os.close(pfd)
            raise
        return Upload(self, pfd, fd, tmp, comps[-1], shown)

    def update(self, path: str, uid: int | None, gid: int | None, mode: int | None) -> dict[str, Any]:
        comps = parts(path)
        shown = "/" + "/".join(comps)
        with self._dir(comps[:-1] if comps else [], shown) as parent:
            try:
                fd = os.open(comps[-1], FILE_FLAGS, dir_fd=parent) if comps else os.dup(parent)
            except OSError as exc:  # a symlink (ELOOP) is refused: its target may lie outside the volume
                raise _oserror(exc, shown) from exc
            try:
                st = os.fstat(fd)
                if uid is not None or gid is not None:
                    os.fchown(fd, self.ids.host(uid, self.ids.api(st.st_uid)),
                              self.ids.host(gid, self.ids.api(st.st_gid)))
                if mode is not None:
                    os.fchmod(fd, mode & 0o7777)
                return self._entry(os.fstat(fd), comps[-1] if comps else "/", shown)
            finally:
                os.close(fd)

    def remove(self, path: str) -> None:
        comps = parts(path)
        shown = "/" + "/".join(comps)
        if not comps:
            raise Invalid("the volume's root cannot be removed (delete the volume)", code="invalid_path")
        with self._dir(comps[:-1], shown) as parent:
            try:
                st = os.stat(comps[-1], dir_fd=parent, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(comps[-1], dir_fd=parent)  # fd-based: symlinks inside are unlinked, not followed
                else:
                    os.unlink(comps[-1], dir_fd=parent)
            except OSError as exc:
                raise _oserror(exc, shown) from exc


class Upload:
    """A file being written: write() chunks, then commit() or abort()."""

    def __init__(self, files: VolumeFiles, parent: int, fd: int, tmp: str, name: str, path: str):
        self.files, self.parent, self.fd, self.tmp, self.name, self.path = files, parent, fd, tmp, name, path

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def commit(self) -> dict[str, Any]:
        try:
            os.close(self.fd)
            self.fd = -1
            os.rename(self.tmp, self.name, src_dir_fd=self.parent, dst_dir_fd=self.parent)
            return self.files._stat_in(self.parent, self.name, self.path)
        except OSError as exc:
            self.abort()
            raise _oserror(exc, self.path) from exc
        finally:
            self._close_parent()

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.parent >= 0:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp, dir_fd=self.parent)
            self._close_parent()

    def _close_parent(self) -> None:
        if self.parent >= 0:
            os.close(self.parent)
            self.parent = -1


def _time(t: float) -> str:
    return iso(datetime.fromtimestamp(t, timezone.utc))


def read_chunk(fd: int) -> bytes:
    return os.read(fd, CHUNK)
