"""A sandbox's root filesystem: an overlay over its template's read-only layers, whose upper dir lives on a
per-sandbox sparse ext4 image mounted through a loop device.

Why an ext4 image: it gives a hard disk quota (the sandbox sees ENOSPC at its limit, the host disk is
untouched) on any host filesystem and frees everything with one unlink. It is a sparse copy of a blank image
made once per size (diskimage.py), mounted with two ioctls and mount(2) (loopdev.py): no fork on this path.
Layout under the sandbox dir:

    disk.img        sparse image, disk_mb big
    disk/           its mount point: upper/ (the sandbox's own changes) and work/ (overlay scratch)
    rootfs/         the overlay, the container's root
"""
from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

from sandboxd.core.errors import RuntimeFailure
from sandboxd.runtime import diskimage, loopdev


def is_mount(path: Path) -> bool:
    target = str(path)
    try:
        with open("/proc/self/mounts") as fh:
            return any(line.split()[1] == target for line in fh)
    except OSError:
        return False


_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2
MS_NOSUID, MS_NODEV = 2, 4


def _mounted_targets() -> set[str]:
    try:
        with open("/proc/self/mounts") as fh:
            return {line.split()[1] for line in fh}
    except OSError:
        return set()


def _umount(target: Path) -> None:
    """umount(2) directly (no fork: destroy is on the hot path); lazily when something still holds it.
    The loop device of the disk image is released with its last unmount (autoclear)."""
    path = os.fsencode(str(target))
    if _libc.umount2(path, 0) == 0:
        return
    err = ctypes.get_errno()
    if err == errno.EINVAL:  # not mounted (any more)
        return
    if _libc.umount2(path, MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise RuntimeFailure(f"umount {target} failed: {os.strerror(err)}", details={"errno": err})


class SandboxRoot:
    def __init__(self, sandbox_dir: Path, layers: tuple[Path, ...], uid_base: int, rootfs: Path | None = None):
        self.dir = sandbox_dir
        self.layers = layers
        self.uid_base = uid_base
        self.image = sandbox_dir / "disk.img"
        self.disk = sandbox_dir / "disk"
        self.upper = self.disk / "upper"
        self.work = self.disk / "work"
        # The mount point may live elsewhere (oci/paths.py: under /run/sandboxd when the data dir is not
        # searchable by the sandbox's uid).
        self.rootfs = rootfs or sandbox_dir / "rootfs"

    def create(self, disk_mb: int, cache_dir: Path | None = None) -> None:
        """Make the disk image (once, at sandbox creation) and mount everything. With cache_dir the image is
        a copy of a cached blank one; without, mkfs runs for this sandbox alone."""
        for layer in self.layers:
            if not layer.is_dir():
                raise RuntimeFailure(f"template layer {layer} is missing", code="template_missing")
        if cache_dir is None:
            diskimage.mkfs(self.image, disk_mb, self.uid_base)
        else:
            diskimage.sparse_copy(diskimage.blank(cache_dir, disk_mb, self.uid_base), self.image)
        self.mount(first=True)

    def mount(self, first: bool = False) -> None:
        """Mount disk and overlay (again, after stop or a host restart). Idempotent."""
        self.disk.mkdir(exist_ok=True)
        self.rootfs.mkdir(parents=True, exist_ok=True)
        if not is_mount(self.disk):
            self._mount_disk()
        if first:
            for d in (self.upper, self.work):
                d.mkdir(exist_ok=True)
            os.chown(self.upper, self.uid_base, self.uid_base)
            # lost+found is host-root owned and would be an odd thing in /; it is not under upper anyway.
        if not is_mount(self.rootfs):
            lower = ":".join(str(p) for p in self.layers)
            # nosuid/nodev: no_new_privs already voids setuid inside, and a host user must not gain the
            # sandbox's ids (or a device) through a binary the sandbox wrote. mount(2) directly: no fork.
            data = f"lowerdir={lower},upperdir={self.upper},workdir={self.work}".encode()
            if _libc.mount(b"overlay", os.fsencode(str(self.rootfs)), b"overlay", MS_NOSUID | MS_NODEV, data) != 0:
                err = ctypes.get_errno()
                raise RuntimeFailure(f"mounting the overlay root failed: {os.strerror(err)}",
                                     details={"errno": err, "lowerdir": lower})

    def _mount_disk(self) -> None:
        try:
            loopdev.mount_image(self.image, self.disk, "ext4", MS_NOSUID | MS_NODEV)
            return
        except loopdev.LoopUnavailable:
            pass
        except OSError as exc:
            raise RuntimeFailure(f"mounting the sandbox disk failed: {exc}", details={"errno": exc.errno}) from exc
        # `-o loop` sets autoclear too: the loop device goes away with the unmount.
        diskimage.run_tool(["mount", "-o", "loop,nosuid,nodev", str(self.image), str(self.disk)])

    def unmount(self) -> None:
        mounted = _mounted_targets()
        for target in (self.rootfs, self.disk):
            if str(target) in mounted:
                _umount(target)

    def usage(self) -> tuple[int, int]:
        """(used, limit) bytes of the sandbox's disk; (0, 0) when it is not mounted."""
        if not is_mount(self.disk):
            return 0, 0
        st = os.statvfs(self.disk)
        return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize
