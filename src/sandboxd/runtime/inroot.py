"""Host-side access to files inside a tree that someone else controls: a template layer, an image made of
layers, a sandbox's overlay upper dir, an operator's import directory.

Such a tree may hold a symlink to anywhere on the host (absolute or through `..`), a FIFO that blocks
open(2) until someone writes, a device, or a file of any size. Opening `root / path` from the host follows
all of those. So nothing here does: every lookup stays inside its root, every open uses O_NOFOLLOW and
O_NONBLOCK (a FIFO cannot block it), the file type is checked with fstat on the descriptor actually opened
(no check-then-open race), and reads stop at a cap.

Two ways in:

- one directory tree (`open_in`, `read_file`): openat2(2) with RESOLVE_IN_ROOT, so the kernel resolves
  every symlink and `..` as if the root were `/` (an absolute symlink points into the tree, never out);
- a stack of overlay layers, top-most first (`Stack`), which the host never mounts for a build: the path
  is walked the way overlayfs does it, one component at a time, each opened O_NOFOLLOW relative to the
  directory before it, whiteouts and opaque directories honoured, and a symlink in the image is resolved
  again from the image's root, never from the host's.

The operations are blocking syscalls on files a sandbox may control: async code runs them in a thread
with a timeout (`run_bounded`).
"""
from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import posixpath
import stat
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

SYS_OPENAT2 = 437  # the same number on every architecture (added after the syscall tables were unified)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

DEFAULT_LIMIT = 4 * 1024 * 1024  # /etc/passwd, /etc/group, os-release, an index.json: far below this
MAX_SYMLINKS = 40  # as the kernel's path walk
OPAQUE_XATTR = "trusted.overlay.opaque"
_SAFE = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

T = TypeVar("T")


class Refused(OSError):
    """The path leads somewhere the host must not go, or to something it must not read (wrong type, too big)."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    how = _OpenHow(flags, mode, resolve)
    fd = _libc.syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dirfd), os.fsencode(path), ctypes.byref(how),
                       ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


def _root_fd(root: str | Path | int, stack: ExitStack) -> int:
    if isinstance(root, int):
        return root
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    stack.callback(os.close, fd)
    return fd


def open_in(root: str | Path | int, path: str, flags: int = os.O_RDONLY, mode: int = 0, *,
            resolve: int = RESOLVE_IN_ROOT, follow: bool = False) -> int:
    """A descriptor for path inside root (a directory path or descriptor, trusted), symlinks and '..'
    resolved inside it. The last component is followed (inside root) only with follow, and a FIFO never
    blocks. The caller closes the descriptor."""
    with ExitStack() as stack:
        rfd = _root_fd(root, stack)
        rel = path.lstrip("/") or "."
        safe = _SAFE & ~os.O_NOFOLLOW if follow else _SAFE
        if flags & os.O_PATH:
            safe &= ~os.O_NONBLOCK  # openat2 refuses other flags with O_PATH (which never blocks anyway)
        try:
            return openat2(rfd, rel, flags | safe, resolve | RESOLVE_NO_MAGICLINKS, mode)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Refused(errno.ELOOP, "a symlink where a file was expected", path) from None
            if exc.errno == errno.EXDEV:
                raise Refused(errno.EXDEV, "the path leaves its root", path) from None
            raise


def read_fd(fd: int, limit: int = DEFAULT_LIMIT) -> bytes:
    """The whole content of a regular file open at fd, refused beyond limit bytes."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise Refused(errno.EINVAL, "not a regular file")
    if st.st_size > limit:
        raise Refused(errno.EFBIG, f"larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:  # the file may grow after fstat: the cap holds on what is read, not what was announced
        chunk = os.read(fd, min(1 << 20, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise Refused(errno.EFBIG, f"larger than {limit} bytes")


def read_file(root: str | Path | int, path: str, limit: int = DEFAULT_LIMIT) -> bytes:
    """The content of a regular file at path inside root (symlinks resolved inside root)."""
    fd = open_in(root, path)
    try:
        return read_fd(fd, limit)
    finally:
        os.close(fd)


def is_dir_in(root: str | Path | int, path: str) -> bool:
    try:
        fd = open_in(root, path, os.O_PATH | os.O_DIRECTORY)
    except OSError:
        return False
    os.close(fd)
    return True


async def run_bounded(fn: Callable[..., T], *args, timeout: float = 10.0) -> T:
    """fn(*args) in a worker thread, so a slow or stuck filesystem never stalls the event loop; TimeoutError
    after timeout seconds (the thread is left to finish on its own)."""
    return await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout)


# ---- a stack of overlay layers ------------------------------------------------------------------------

def clean(path: str, cwd: str = "/") -> str:
    """An absolute, normalised in-image path; relative paths start at cwd and '..' stops at '/'."""
    if "\x00" in path:
        raise ValueError("path contains a NUL byte")
    return posixpath.normpath("/" + posixpath.join(cwd or "/", path).lstrip("/")).replace("//", "/")


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, OPAQUE_XATTR) == b"y"
    except OSError:
        return False


@dataclass(frozen=True)
class Entry:
    """Where an in-image path lives: the layer holding its top-most version, and its lstat there."""
    path: str  # in the image, with every symlinked directory on the way resolved
    layer: Path
    st: os.stat_result

    @property
    def host_path(self) -> Path:
        """For naming and for trees the caller created itself only: never open this on a hostile layer."""
        return self.layer / self.path.lstrip("/")


class Stack:
    """An image as overlayfs would show it, read from its layers (top-most first) without mounting them."""

    def __init__(self, layers: Sequence[Path | str]):
        self.layers = [Path(p) for p in layers]

    def _walk(self, path: str, follow: bool, fds: ExitStack) -> tuple[tuple[Entry, int, str] | None, str]:
        """((entry, descriptor of its parent directory in entry.layer, its name) or None when absent,
        the path resolved in the image as far as it exists, the rest appended as written)."""
        hops = 0
        while True:
            parts = [p for p in clean(path).split("/") if p]
            dirs: list[tuple[int, int]] = []  # (layer index, directory fd) of the layers merged at this point
            for i, layer in enumerate(self.layers):
                try:
                    fd = os.open(layer, _DIR)
                except OSError:
                    continue  # a layer missing on disk contributes nothing
                fds.callback(os.close, fd)
                dirs.append((i, fd))
            if not parts:
                if not dirs:
                    return None, "/"
                i, fd = dirs[0]
                return (Entry("/", self.layers[i], os.fstat(fd)), fd, "."), "/"
            done = "/"
            restart = None
            for n, name in enumerate(parts):
                last = n == len(parts) - 1
                found: tuple[int, int, os.stat_result] | None = None
                below: list[tuple[int, int]] = []
                for i, dfd in dirs:
                    try:
                        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    except (FileNotFoundError, NotADirectoryError):
                        continue
                    if is_whiteout(st):
                        break  # deleted here: hides every lower layer
                    if found is None:
                        found = (i, dfd, st)
                        if not stat.S_ISDIR(st.st_mode) or last:
                            break
                    elif not stat.S_ISDIR(st.st_mode):
                        break  # a lower non-directory is hidden by the directory above, and so is all below
                    try:
                        sub = os.open(name, _DIR, dir_fd=dfd)
                    except OSError:
                        break  # replaced since the stat (a live upper dir): stop merging here
                    fds.callback(os.close, sub)
                    below.append((i, sub))
                    if _opaque(sub):
                        break
                here = posixpath.join(done, name)
                if found is None:
                    return None, posixpath.join(here, *parts[n + 1:])
                i, dfd, st = found
                if stat.S_ISLNK(st.st_mode) and (follow or not last):
                    hops += 1
                    if hops > MAX_SYMLINKS:
                        raise Refused(errno.ELOOP, "too many levels of symbolic links", path)
                    target = os.readlink(name, dir_fd=dfd)
                    rest = "/".join(parts[n + 1:])
                    restart = posixpath.join(clean(target, done), rest) if rest else clean(target, done)
                    break
                if last:
                    return (Entry(here, self.layers[i], st), dfd, name), here
                if not stat.S_ISDIR(st.st_mode) or not below:
                    return None, posixpath.join(here, *parts[n + 1:])  # a file where a directory was expected
                dirs = below
                done = here
            if restart is None:
                return None, clean(path)
            path = restart
            fds.close()

    def lookup(self, path: str, *, follow: bool = False) -> Entry | None:
        """The top-most version of path, or None when absent or deleted. Directories on the way are
        resolved through the image's symlinks; the last component only with follow."""
        with ExitStack() as fds:
            hit, _ = self._walk(path, follow, fds)
            return hit[0] if hit else None

    def resolve(self, path: str) -> str:
        """path with every symlinked directory on the way resolved in the image (the last component kept;
        a missing tail is kept as written)."""
        with ExitStack() as fds:
            return self._walk(path, False, fds)[1]

    def read(self, path: str, limit: int = DEFAULT_LIMIT) -> bytes:
        """The content of the regular file at path (symlinks followed inside the image)."""
        with ExitStack() as fds:
            got = self._walk(path, True, fds)[0]
            if got is None:
                raise FileNotFoundError(errno.ENOENT, "no such file in the image", path)
            _, dfd, name = got
            fd = os.open(name, os.O_RDONLY | _SAFE, dir_fd=dfd)
            try:
                return read_fd(fd, limit)
            finally:
                os.close(fd)

    def is_dir(self, path: str) -> bool:
        try:
            got = self.lookup(path, follow=True)
        except OSError:
            return False
        return got is not None and stat.S_ISDIR(got.st.st_mode)
