"""File operations on the sandbox's own filesystem (no HTTP here; routes/files.py translates).

Relative paths are taken from the workspace directory. Pseudo-filesystems (/proc, /sys, /dev) are
read-only to the API: writes there are PATH_NOT_ALLOWED.
"""
from __future__ import annotations

import base64
import binascii
import errno
import os
import re
import shutil
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator, Iterator

from . import users
from .errors import (AgentError, DirectoryNotFound, FileExists, FileNotFound, InvalidPath, InvalidRequest,
                     MissingParameter, PathNotAllowed, PermissionDenied, WatcherNotFound)

if TYPE_CHECKING:
    from .watch import Change, DirWatch

READ_TEXT_LIMIT = 64 * 1024 * 1024
CHUNK = 1024 * 1024
PROTECTED = ("/proc", "/sys", "/dev")
MAX_LIST = 100000
# User metadata lives in extended attributes under this prefix, so it travels with the file (renames,
# copies with xattrs) and can be set by the sandbox's own tools (setfattr, os.setxattr).
XATTR_PREFIX = "user.e2b."
# Keys travel as HTTP header names and values as header values: a token, and printable ASCII.
_META_KEY = re.compile(r"\A[A-Za-z0-9!#$%&'*+\-.^_`|~]+\Z")
_META_VALUE = re.compile(r"\A[\x20-\x7e]*\Z")
Owner = tuple[int, int] | None  # (uid, gid) that new files and directories are given; None: the agent's own


@dataclass
class Entry:
    """One path as the agent sees it, for each API to shape its own way. `st` is the path's own
    (a symlink is not followed); `target_kind` is what a symlink points to ("dir", "file", or None when
    it points nowhere)."""

    path: str
    st: os.stat_result
    symlink_target: str | None = None
    target_kind: str | None = None
    metadata: dict[str, str] | None = None

    @property
    def name(self) -> str:
        return os.path.basename(self.path) or "/"

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.st.st_mode)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    @property
    def owner(self) -> str:
        return users.name_of(self.st.st_uid)

    @property
    def group(self) -> str:
        return users.group_name(self.st.st_gid)


def entry(path: str, st: os.stat_result | None = None) -> Entry:
    """The Entry for `path` (OSError when it is gone)."""
    e = Entry(path, st or os.lstat(path))
    if e.is_symlink:
        e.symlink_target = os.path.realpath(path)
        try:
            e.target_kind = "dir" if stat.S_ISDIR(os.stat(path).st_mode) else "file"
        except OSError:
            pass
    else:
        e.metadata = read_metadata(path)
    return e


def read_metadata(path: str) -> dict[str, str] | None:
    """The file's user metadata (its `user.e2b.*` extended attributes), or None when it has none."""
    try:
        names = [n for n in os.listxattr(path) if n.startswith(XATTR_PREFIX)]
        out = {n[len(XATTR_PREFIX):]: os.getxattr(path, n).decode("utf-8", "replace") for n in names}
    except OSError:  # a filesystem without xattrs, or the file went away meanwhile
        return None
    return out or None


def check_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    """Metadata as it will be stored (keys lowercased), or InvalidRequest for a key or value that could
    not travel back in an HTTP header."""
    out = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not _META_KEY.match(key):
            raise InvalidRequest(f"invalid metadata key {key!r}")
        if not isinstance(value, str) or not _META_VALUE.match(value):
            raise InvalidRequest(f"invalid metadata value for key {key!r}")
        out[key.lower()] = value
    return out


def write_metadata(full: str, metadata: dict[str, str]) -> None:
    """Replaces the file's user metadata with `metadata` (empty: removes it)."""
    try:
        for name in os.listxattr(full):
            if name.startswith(XATTR_PREFIX) and name[len(XATTR_PREFIX):] not in metadata:
                os.removexattr(full, name)
        for key, value in metadata.items():
            os.setxattr(full, XATTR_PREFIX + key, value.encode())
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP) and not metadata:
            return  # nothing to clear on a filesystem without xattrs
        raise os_error(e, full) from None


class Files:
    def __init__(self, workspace: str = "/workspace"):
        self.workspace = workspace
        self.watchers: dict[str, DirWatch] = {}  # polled watches, by id

    def resolve(self, path: str | None, *, writing: bool = False) -> str:
        if path is None or path == "":
            raise MissingParameter("missing parameter: path", path=path or "")
        if "\x00" in path:
            raise InvalidPath("path contains a NUL byte", path=path)
        full = os.path.normpath(path if path.startswith("/") else os.path.join(self.workspace, path))
        if full.startswith("//"):
            full = full[1:]
        if writing and (full == "/" or any(full == p or full.startswith(p + "/") for p in PROTECTED)):
            raise PathNotAllowed(f"path not allowed: {full}", path=full)
        return full

    # ---- reading
    def read_small(self, path: str) -> tuple[str, bytes]:
        """(resolved path, whole content) of a file up to READ_TEXT_LIMIT; larger ones are to be streamed."""
        full = self.resolve(path)
        st = self._stat_file(full)
        if st.st_size > READ_TEXT_LIMIT:
            raise InvalidRequest(f"file too large to read whole ({st.st_size} bytes); download it instead",
                                 path=full, size=st.st_size)
        with _open(full, "rb") as f:
            return full, f.read()

    def open_download(self, path: str) -> tuple[str, int, Iterator[bytes]]:
        full = self.resolve(path)
        st = self._stat_file(full)
        f = _open(full, "rb")

        def chunks() -> Iterator[bytes]:
            with f:
                while True:
                    data = f.read(CHUNK)
                    if not data:
                        return
                    yield data

        return full, st.st_size, chunks()

    def _stat_file(self, full: str) -> os.stat_result:
        try:
            st = os.stat(full)
        except FileNotFoundError:
            raise FileNotFound(f"file not found: {full}", path=full) from None
        except NotADirectoryError:
            raise FileNotFound(f"file not found: {full}", path=full) from None
        except PermissionError:
            raise PermissionDenied(f"permission denied: {full}", path=full) from None
        if stat.S_ISDIR(st.st_mode):
            raise InvalidPath(f"is a directory: {full}", path=full)
        return st

    # ---- writing
    def write(self, path: str, content: str | bytes, *, encoding: str | None = None, mode: str | int | None = None,
              overwrite: bool = True) -> tuple[str, int]:
        """Writes a whole file (parents created); (resolved path, bytes written)."""
        full = self.resolve(path, writing=True)
        if isinstance(content, str):
            if (encoding or "").lower() == "base64":
                try:
                    data = base64.b64decode(content, validate=False)
                except (binascii.Error, ValueError) as e:
                    raise InvalidRequest(f"content is not valid base64: {e}", path=full) from None
            else:
                data = content.encode("utf-8")
        else:
            data = content
        if not overwrite and os.path.exists(full):
            raise FileExists(f"file already exists: {full}", path=full)
        self._parents(full)
        perm = parse_mode(mode)
        with _open(full, "wb") as f:
            try:
                f.write(data)
            except OSError as e:
                raise os_error(e, full) from None
        if perm is not None:
            _chmod(full, perm)
        return full, len(data)

    def open_upload(self, path: str, mode: str | int | None = None, *, owner: Owner = None):
        """A writable binary file at `path` (parents created) for streamed uploads. A file it creates,
        and the parents, are given to `owner`."""
        full = self.resolve(path, writing=True)
        if os.path.isdir(full):
            raise InvalidPath(f"is a directory: {full}", path=full)
        self._parents(full, owner)
        existed = os.path.lexists(full)
        f = _open(full, "wb")
        if not existed:
            _chown(full, owner)
        perm = parse_mode(mode)
        if perm is not None:
            _chmod(full, perm)
        return full, f

    def _parents(self, full: str, owner: Owner = None) -> None:
        parent = os.path.dirname(full)
        try:
            _makedirs(parent, owner)
        except FileExistsError:
            raise InvalidPath(f"parent is not a directory: {parent}", path=full) from None
        except NotADirectoryError:
            raise InvalidPath(f"a parent of {full} is not a directory", path=full) from None
        except OSError as e:
            raise os_error(e, parent) from None

    def make_dir(self, path: str, *, owner: Owner = None) -> Entry:
        """A new directory (and its missing parents); FileExists when the directory is already there,
        InvalidPath when something else is."""
        full = self.resolve(path, writing=True)
        if os.path.lexists(full):
            if os.path.isdir(full):
                raise FileExists(f"directory already exists: {full}", path=full, kind="directory")
            raise InvalidPath(f"path already exists and is not a directory: {full}", path=full)
        try:
            _makedirs(full, owner)
        except OSError as e:
            raise os_error(e, full) from None
        return self.stat(full)

    def move(self, source: str, destination: str, *, owner: Owner = None) -> Entry:
        src, dst = self.resolve(source, writing=True), self.resolve(destination, writing=True)
        if not os.path.lexists(src):
            raise FileNotFound(f"file not found: {src}", path=src)
        self._parents(dst, owner)
        try:
            os.rename(src, dst)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise os_error(e, dst) from None
            try:
                shutil.move(src, dst)  # another filesystem: copy, then remove
            except OSError as e2:
                raise os_error(e2, dst) from None
        return self.stat(dst)

    def mkdir(self, path: str, mode: str | int | None = None) -> str:
        """mkdir -p; the resolved path."""
        full = self.resolve(path, writing=True)
        try:
            os.makedirs(full, mode=parse_mode(mode) or 0o755, exist_ok=True)
        except FileExistsError:
            raise FileExists(f"a file exists at {full}", path=full) from None
        except OSError as e:
            raise os_error(e, full) from None
        return full

    def remove(self, path: str, recursive: bool = True, *, missing_ok: bool = False) -> str:
        """Removes a file, link or (recursively) directory; the resolved path."""
        full = self.resolve(path, writing=True)
        try:
            if os.path.isdir(full) and not os.path.islink(full):
                if recursive:
                    shutil.rmtree(full)
                else:
                    os.rmdir(full)
            else:
                os.unlink(full)
        except FileNotFoundError:
            if not missing_ok:
                raise FileNotFound(f"file not found: {full}", path=full) from None
        except OSError as e:
            if e.errno in _REFUSED:
                raise os_error(e, full) from None
            raise InvalidRequest(f"cannot remove {full}: {e.strerror}", path=full) from None
        return full

    # ---- metadata
    def stat(self, path: str) -> Entry:
        full = self.resolve(path)
        try:
            return entry(full)
        except OSError as e:
            raise os_error(e, full) from None

    def walk(self, path: str, depth: int = 1) -> list[Entry]:
        """The entries of a directory, sorted by name, and of its subdirectories down to `depth` levels
        (symlinked directories are listed, not entered)."""
        top = self.stat(path)
        if not (top.is_dir or top.target_kind == "dir"):
            raise DirectoryNotFound(f"not a directory: {top.path}", path=top.path)
        out: list[Entry] = []

        def visit(d: str, level: int) -> None:
            try:
                items = sorted(os.scandir(d), key=lambda e: e.name)
            except OSError as e:
                if d == top.path:
                    raise os_error(e, d) from None
                return  # a subdirectory we may not read, or one that went away
            for item in items:
                if len(out) >= MAX_LIST:
                    return
                try:
                    out.append(entry(item.path, item.stat(follow_symlinks=False)))
                except OSError:
                    continue  # vanished while listing
                if level < depth and item.is_dir(follow_symlinks=False):
                    visit(item.path, level + 1)

        visit(top.path, 1)
        return out

    # ---- watching
    def watch(self, path: str, *, recursive: bool, with_entries: bool = False,
              network_mounts: bool = False) -> DirWatch:
        """A watch on a directory; the caller closes it. A directory on a network filesystem is refused
        unless `network_mounts`: inotify sees only this machine's own changes there."""
        top = self.stat(path)
        if not top.is_dir:
            raise DirectoryNotFound(f"not a directory: {top.path}", path=top.path)
        from .watch import DirWatch, network_filesystem

        fstype = None if network_mounts else network_filesystem(top.path)
        if fstype:
            raise InvalidRequest(f"{top.path} is on a network filesystem ({fstype}); its changes may never be "
                                 "reported: allow network mounts to watch it anyway", path=top.path)

        try:
            return DirWatch(top.path, recursive, with_entries)
        except OSError as e:
            raise AgentError(f"cannot watch {top.path}: {e}", path=top.path) from None

    def open_watcher(self, path: str, **options) -> str:
        """A watch (options as for `watch`) that collects changes until `take_changes` or `close_watcher`;
        returns its id."""
        w = self.watch(path, **options)
        w.collect()
        wid = os.urandom(16).hex()
        self.watchers[wid] = w
        return wid

    def take_changes(self, wid: str) -> list[Change]:
        return self._watcher(wid).take()

    def close_watcher(self, wid: str) -> None:
        self._watcher(wid).close()
        del self.watchers[wid]

    def _watcher(self, wid: str) -> DirWatch:
        w = self.watchers.get(wid)
        if w is None:
            raise WatcherNotFound(f"watcher with id {wid} not found", watcher_id=wid)
        return w

    def exists(self, path: str) -> tuple[str, bool, bool]:
        """(resolved path, whether something is there, whether it is a directory)."""
        full = self.resolve(path)
        ok = os.path.lexists(full)
        return full, ok, ok and os.path.isdir(full)

    def list(self, path: str | None) -> tuple[str, list[Entry]]:
        """(resolved path, its entries by name); DirectoryNotFound when it is not a directory."""
        full = self.resolve(path or self.workspace)
        try:
            entries = list(os.scandir(full))
        except FileNotFoundError:
            raise DirectoryNotFound(f"directory not found: {full}", path=full) from None
        except NotADirectoryError:
            raise DirectoryNotFound(f"not a directory: {full}", path=full) from None
        except PermissionError:
            raise PermissionDenied(f"permission denied: {full}", path=full) from None
        files = []
        for e in sorted(entries, key=lambda e: e.name):
            try:
                files.append(entry(e.path, e.stat(follow_symlinks=False)))
            except OSError:
                continue  # vanished while listing
        return full, files


def _chown(path: str, owner: Owner) -> None:
    """Files the API creates belong to the user it acts for, so their own commands can change them."""
    if owner is not None and os.geteuid() == 0:
        try:
            os.lchown(path, *owner)
        except OSError:
            pass


def _makedirs(path: str, owner: Owner) -> None:
    """mkdir -p, giving every directory it creates to `owner`."""
    if owner is None:
        os.makedirs(path, exist_ok=True)
        return
    missing = []
    p = path
    while p and p != "/" and not os.path.lexists(p):
        missing.append(p)
        p = os.path.dirname(p)
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o755)
        except FileExistsError:
            continue
        _chown(d, owner)
    if not os.path.isdir(path):
        raise FileExistsError(errno.EEXIST, "not a directory", path)


def parse_mode(mode: str | int | None) -> int | None:
    if mode in (None, ""):
        return None
    if isinstance(mode, int):
        return mode & 0o7777
    try:
        value = int(str(mode), 8)
    except ValueError:
        raise InvalidRequest(f"mode must be an octal string like '0644', got {mode!r}") from None
    if not 0 <= value <= 0o7777:
        raise InvalidRequest(f"mode out of range: {mode!r}")
    return value


# Refusals by the filesystem rather than by file permissions: a read-only mount (EROFS), an immutable
# file (EPERM comes as PermissionError). They are the caller's to fix, like a permission, so a 403.
_REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ETXTBSY)


def os_error(e: OSError, full: str) -> AgentError:
    """The agent error for an OSError met at `full` (the one place that maps errno for file calls)."""
    if isinstance(e, FileNotFoundError):
        return FileNotFound(f"file not found: {full}", path=full)
    if isinstance(e, IsADirectoryError):
        return InvalidPath(f"is a directory: {full}", path=full)
    if isinstance(e, NotADirectoryError):
        return DirectoryNotFound(f"a parent of {full} is not a directory", path=full)
    if isinstance(e, FileExistsError):
        return FileExists(f"file already exists: {full}", path=full)
    if e.errno in _REFUSED:
        what = "read-only file system" if e.errno == errno.EROFS else "permission denied"
        return PermissionDenied(f"{what}: {full}", path=full)
    return AgentError(f"{full}: {e.strerror or e}", path=full)


def _open(full: str, how: str):
    try:
        return open(full, how)
    except OSError as e:
        raise os_error(e, full) from None


def _chmod(full: str, perm: int) -> None:
    try:
        os.chmod(full, perm)
    except OSError as e:
        raise os_error(e, full) from None


async def aiter_sync(it: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Feed a blocking chunk iterator to the event loop without stalling other requests."""
    import asyncio

    loop = asyncio.get_running_loop()
    while True:
        chunk: bytes | None = await loop.run_in_executor(None, next, it, None)
        if chunk is None:
            return
        yield chunk
