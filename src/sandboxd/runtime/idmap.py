"""Idmapped mounts and fd-built overlays through the new mount API (open_tree, mount_setattr, fsopen, fsmount,
move_mount), by ctypes: no fork, no mount(8).

Why: the template store and each sandbox's disk keep one id convention on disk (the store's: uid_base + uid),
and every sandbox has its own host uid range (uidslots.py). An idmapped mount shows a tree through a user
namespace's mapping: a file stored as uid_base + n appears (and is written) as the sandbox's base + n, so
one shared, read-only store serves every range without a copy or a chown per sandbox.

The overlay is assembled from file descriptors (`lowerdir+`, `upperdir`, `workdir` set by fd, kernel >= 6.13):
its layers may be detached mounts, so the idmapped copies of the layers never appear in any mount table, and
the overlay's options (what /proc/self/mountinfo shows, inside the sandbox too) name each layer by its path
within its own mount ("/", "/upper", "/work"), never a host path.

Kernels before 6.13 know no `lowerdir+` by fd: overlay_by_fd() finds that out once per process (one fsconfig
on a scratch context, never mounted) and rootfs.py then attaches the idmapped copies to short mount points
and names them by path (overlay takes idmapped layers since 5.19). SANDBOXD_OVERLAY_BY_FD=false forces that
path anywhere, so it is tested on new kernels too. require_idmapped_overlay() is the check at backend start.

The user namespace that carries a mapping is made by a fork that unshares, whose maps the host writes (~2 ms),
and its fd kept for the next mount with that mapping: a mapping belongs to a uid range, and ranges are reused
lowest first. At most USERNS_CACHE are kept (fds are a budget: every sandbox holds sockets too); a mount keeps
its own reference to the namespace, so closing an evicted fd changes nothing mounted.
"""
from __future__ import annotations

import ctypes
import os
import threading
from collections import OrderedDict

_libc = ctypes.CDLL(None, use_errno=True)
# x86_64 and aarch64 share these numbers (the new mount API came after the syscall tables were unified).
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_FSOPEN, SYS_FSCONFIG, SYS_FSMOUNT, SYS_MOUNT_SETATTR = 428, 429, 430, 431, 432, 442
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC, AT_EMPTY_PATH, AT_FDCWD = 1, os.O_CLOEXEC, 0x1000, -100
FSOPEN_CLOEXEC, FSMOUNT_CLOEXEC, MOVE_MOUNT_F_EMPTY_PATH = 1, 1, 4
FSCONFIG_SET_STRING, FSCONFIG_SET_FD, FSCONFIG_CMD_CREATE = 1, 5, 6
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_IDMAP = 0x1, 0x2, 0x4, 0x100000
CLONE_NEWUSER = 0x10000000
HOST_SAFE = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV  # what every mount the host can see gets


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _sys(nr: int, *args, what: str) -> int:
    rc = _libc.syscall(nr, *args)
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc


Mapping = tuple[tuple[int, int, int], ...]  # (id on disk, host id, count) lines
USERNS_CACHE = 128
_userns: OrderedDict[Mapping, int] = OrderedDict()
_userns_lock = threading.Lock()


class UsernsFd:
    """A user namespace whose uid and gid maps are `mapping`, as an fd for the with-block."""

    def __init__(self, mapping: Mapping):
        self.mapping = mapping

    def __enter__(self) -> int:
        _userns_lock.acquire()  # held while the fd is in use: eviction never closes it under a mount
        try:
            fd = _userns.get(self.mapping)
            if fd is None:
                fd = _userns[self.mapping] = _make_userns(self.mapping)
                while len(_userns) > USERNS_CACHE:
                    os.close(_userns.popitem(last=False)[1])
            _userns.move_to_end(self.mapping)
            return fd
        except BaseException:
            _userns_lock.release()
            raise

    def __exit__(self, *exc) -> None:
        _userns_lock.release()


def _make_userns(mapping: Mapping) -> int:
    text = "".join(f"{inner} {outer} {count}\n" for inner, outer, count in mapping)
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # only async-signal-safe work here: unshare, tell the parent, wait for it, leave
        try:
            os.close(ready_r)
            os.close(done_w)
            os.write(ready_w, b"1" if _libc.unshare(CLONE_NEWUSER) == 0 else b"0")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError(0, "unshare(CLONE_NEWUSER) failed in the mapping helper")
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w") as fh:
                fh.write(text)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(done_w)
        os.close(ready_r)
        os.waitpid(pid, 0)


def clone(path_or_fd: str | int, *, userns: int | None = None, attrs: int = HOST_SAFE) -> int:
    """A detached copy of the mount at path (or of a mount fd), idmapped through userns when given; its fd."""
    if isinstance(path_or_fd, int):
        fd = _sys(SYS_OPEN_TREE, path_or_fd, b"", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH,
                  what="open_tree")
    else:
        fd = _sys(SYS_OPEN_TREE, AT_FDCWD, os.fsencode(path_or_fd), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC,
                  what="open_tree")
    try:
        if userns is not None:
            attrs |= MOUNT_ATTR_IDMAP
        attr = _MountAttr(attrs, 0, 0, userns if userns is not None else 0)
        _sys(SYS_MOUNT_SETATTR, fd, b"", AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr),
             what="mount_setattr")
    except BaseException:
        os.close(fd)
        raise
    return fd


_by_fd: bool | None = None
_probe_lock = threading.Lock()


def overlay_by_fd() -> bool:
    """Whether overlay layers can be given by fd here (Linux >= 6.13), probed once per process."""
    global _by_fd
    with _probe_lock:
        if _by_fd is None:
            if os.environ.get("SANDBOXD_OVERLAY_BY_FD", "").strip().lower() in ("0", "false", "no", "off"):
                _by_fd = False
            else:
                _by_fd = _probe_by_fd()
        return _by_fd


def _probe_by_fd() -> bool:
    fs = _sys(SYS_FSOPEN, b"overlay", FSOPEN_CLOEXEC, what="fsopen overlay")
    d = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _sys(SYS_FSCONFIG, fs, FSCONFIG_SET_FD, b"lowerdir+", None, d, what="overlay lowerdir+ probe")
        return True
    except OSError:
        return False  # EINVAL: an option this overlay does not know
    finally:
        os.close(d)
        os.close(fs)


def require_idmapped_overlay() -> None:
    """Raise OSError unless this kernel has mount_setattr (5.12) and overlay over idmapped layers (5.19)."""
    try:
        os.close(clone("/", attrs=HOST_SAFE))  # mount_setattr: ENOSYS before 5.12
        os.close(_sys(SYS_FSOPEN, b"overlay", FSOPEN_CLOEXEC, what="fsopen overlay"))
    except PermissionError:
        pass  # not root: the kernel is not what stops this process
    # Idmapped layers came with the new mount API's overlay support; 5.19 is the release that accepts them.
    rel = os.uname().release.split("-")[0].split(".")
    try:
        if (int(rel[0]), int(rel[1])) < (5, 19):
            raise OSError(95, "sandboxd needs Linux >= 5.19 (overlay over idmapped mounts)")
    except (ValueError, IndexError):
        pass


def overlay_paths(lowers: list[str], upper: str | None, work: str | None, target: str, flags: int) -> None:
    """Mount an overlay of these directories (top-most lower first) at target with mount(2): the options
    must fit one page, so callers keep the paths short. Without upper and work: a read-only overlay."""
    data = os.fsencode(f"lowerdir={':'.join(lowers)}" + (f",upperdir={upper},workdir={work}" if upper else ""))
    if len(data) >= os.sysconf("SC_PAGE_SIZE"):
        raise OSError(7, f"overlay options are {len(data)} bytes, more than a page")  # E2BIG
    if _libc.mount(b"overlay", os.fsencode(target), b"overlay", flags, data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount overlay at {target}: {os.strerror(err)}")


def attach(mount_fd: int, target: str) -> None:
    """Put a detached mount at target."""
    _sys(SYS_MOVE_MOUNT, mount_fd, b"", AT_FDCWD, os.fsencode(target), MOVE_MOUNT_F_EMPTY_PATH,
         what=f"move_mount to {target}")


def bind_view(source: str, target: str, *, userns: int | None = None, attrs: int = HOST_SAFE) -> None:
    """Mount a (possibly idmapped) copy of the mount at source on target: clone, then attach."""
    fd = clone(source, userns=userns, attrs=attrs)
    try:
        attach(fd, target)
    finally:
        os.close(fd)


def overlay(lower_fds: list[int], upper_fd: int | None, work_fd: int | None, attrs: int = HOST_SAFE) -> int:
    """A detached overlay mount of these layer directories (fds; top-most lower first); its fd. Without
    upper and work: a read-only overlay (of two lower dirs at least)."""
    fs = _sys(SYS_FSOPEN, b"overlay", FSOPEN_CLOEXEC, what="fsopen overlay")
    try:
        for fd in lower_fds:
            _sys(SYS_FSCONFIG, fs, FSCONFIG_SET_FD, b"lowerdir+", None, fd,
                 what="overlay lower layer by fd (needs Linux >= 6.13)")
        if upper_fd is not None and work_fd is not None:
            _sys(SYS_FSCONFIG, fs, FSCONFIG_SET_FD, b"upperdir", None, upper_fd, what="overlay upper dir")
            _sys(SYS_FSCONFIG, fs, FSCONFIG_SET_FD, b"workdir", None, work_fd, what="overlay work dir")
        _sys(SYS_FSCONFIG, fs, FSCONFIG_CMD_CREATE, None, None, 0, what="overlay create")
        return _sys(SYS_FSMOUNT, fs, FSMOUNT_CLOEXEC, attrs, what="fsmount overlay")
    finally:
        os.close(fs)


__all__ = ["Mapping", "UsernsFd", "clone", "attach", "overlay", "overlay_by_fd", "overlay_paths",
           "require_idmapped_overlay", "HOST_SAFE", "MOUNT_ATTR_RDONLY"]
