"""A sandbox's root filesystem: an overlay over its template's read-only layers, whose upper dir lives on a
per-sandbox sparse ext4 image mounted through a loop device.

Why an ext4 image: it gives a hard disk quota (the sandbox sees ENOSPC at its limit, the host disk is
untouched) on any host filesystem and frees everything with one unlink. It is a sparse copy of a blank image
made once per size (diskimage.py), mounted with two ioctls and mount(2) (loopdev.py): no fork on this path.

Ids: the disk stores ids in the template store's convention (host uid_base + n for the sandbox's uid n), so
a build's upper dir becomes a layer with a plain copy and a sandbox's disk does not depend on which uid
range it ran in. Every view of the sandbox's files is idmapped to the sandbox's own host range (Ids,
idmap.py): the overlay's layers and upper dir, and the host's `disk/`. Layout under the sandbox dir:

    disk.img        sparse image, disk_mb big
    raw/            its mount point, ids as stored: upper/ (the sandbox's own changes), work/ (overlay
                    scratch), meta/ (hosts, hostname, resolv.conf: bound read-only into the sandbox, from
                    its own disk so its mountinfo names no host path); only host root may enter it (root
                    dir 0700) - template builds copy from it
    disk/           the same filesystem idmapped to the sandbox's range (what the host shows of it)
    rootfs/         the overlay, the container's root; its mount options name no host path
    volumes/<i>     the sandbox's i-th volume (core/volumes.py), idmapped to its range like disk/: config.json
                    binds it read-write at its path. Volumes keep the store's ids on the host, so a file one
                    sandbox wrote as its uid n is uid n in every later sandbox that mounts the volume. (The
                    sandbox's mountinfo names the volume's dir under the data dir: a bind shows its source.)

On kernels before 6.13 (or with SANDBOXD_OVERLAY_BY_FD=false) the overlay cannot take its layers by fd:
the same idmapped copies are attached under /run/sandboxd/<tag>/l/<id>/ (0700, root only) as 0, 1, ...
(lowers) and v (the disk's idmapped view), and the overlay is mounted by path over them. A sandbox then sees
those short /run paths in its mountinfo (no data dir path); unmount() takes them down and removes the dir.

Every mount here is nosuid,nodev: a host user must not gain a sandbox's ids (or a device) through a file
the sandbox wrote. (Inside, no_new_privs voids setuid anyway; the bits themselves are kept.)
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from dataclasses import dataclass
from pathlib import Path

from sandboxd.errors import RuntimeFailure
from sandboxd.runtime import diskimage, idmap, loopdev
from sandboxd.runtime.oci import paths


@dataclass(frozen=True)
class Ids:
    """How ids stored on disk (the store's convention, from store_base) map to a sandbox's host range."""
    store_base: int
    host_base: int
    count: int

    def mapping(self) -> idmap.Mapping:
        # 0 -> 0 too: overlay writes its work files as the mounter (host root), which must stay itself.
        return ((0, 0, 1), (self.store_base, self.host_base, self.count))

    def userns(self) -> idmap.UsernsFd | contextlib.nullcontext:
        """The idmapping's user namespace (a with-block gives its fd); None when the sandbox runs in the
        store's own range (a sandbox from before per-sandbox ranges)."""
        return contextlib.nullcontext() if self.host_base == self.store_base else idmap.UsernsFd(self.mapping())


_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2
MS_NOSUID, MS_NODEV = 2, 4


def mounted_targets() -> set[str]:
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


def require_kernel() -> None:
    """Fail at backend start, not at the first create, on a kernel that cannot build a sandbox's root."""
    try:
        idmap.require_idmapped_overlay()
    except OSError as exc:
        raise RuntimeFailure("sandboxd needs Linux >= 5.19 with overlayfs (idmapped mounts under overlay); "
                             f"this kernel is {os.uname().release}: {exc.strerror or exc}",
                             details={"errno": exc.errno}) from exc


class SandboxRoot:
    def __init__(self, sandbox_dir: Path, layers: tuple[Path, ...], ids: Ids | None, rootfs: Path | None = None,
                 volumes: tuple[Path, ...] = ()):
        self.dir = sandbox_dir
        self.volumes = volumes
        self.volume_mounts = sandbox_dir / "volumes"
        self.layers = layers
        self.ids = ids
        self.image = sandbox_dir / "disk.img"
        self.raw = sandbox_dir / "raw"
        self.disk = sandbox_dir / "disk"
        self.upper = self.raw / "upper"
        self.work = self.raw / "work"
        self.meta = self.raw / "meta"
        # The mount point may live elsewhere (oci/paths.py: under /run/sandboxd when the data dir is not
        # searchable by the sandbox's uid).
        self.rootfs = rootfs or sandbox_dir / "rootfs"
        self.layer_mounts = paths.layers_path(sandbox_dir)

    def create(self, disk_mb: int, cache_dir: Path | None = None) -> None:
        """Make the disk image (once, at sandbox creation) and mount everything. With cache_dir the image is
        a copy of a cached blank one; without, mkfs runs for this sandbox alone."""
        for layer in self.layers:
            if not layer.is_dir():
                raise RuntimeFailure(f"template layer {layer.parent.name} is missing", code="template_missing")
        if cache_dir is None:
            diskimage.mkfs(self.image, disk_mb, 0)
        else:
            diskimage.sparse_copy(diskimage.blank(cache_dir, disk_mb, 0), self.image)
        self.mount(first=True)

    def mount(self, first: bool = False) -> None:
        """Mount disk, its idmapped view and the overlay (again, after stop or a host restart). Idempotent."""
        assert self.ids is not None
        mounted = set() if first else mounted_targets()
        for d in (self.raw, self.disk, self.rootfs):
            d.mkdir(parents=True, exist_ok=True)
        if str(self.raw) not in mounted:
            self._mount_disk(again=not first)
            # Only host root enters the disk (a sandbox dir from before raw/ had its disk root 0755).
            os.chmod(self.raw, 0o700)
        if first:
            for d in (self.upper, self.work, self.meta):
                d.mkdir(exist_ok=True)
            os.chown(self.upper, self.ids.store_base, self.ids.store_base)
            # lost+found is host-root owned and would be an odd thing in /; it is not under upper anyway.
        with self.ids.userns() as userns:
            if str(self.disk) not in mounted:
                idmap.bind_view(str(self.raw), str(self.disk), userns=userns)
            if str(self.rootfs) not in mounted:
                self._mount_overlay(userns)
            for i, src in enumerate(self.volumes):
                target = self.volume_mounts / str(i)
                if str(target) not in mounted:
                    self._mount_volume(src, target, userns)

    def _mount_volume(self, src: Path, target: Path, userns: int | None) -> None:
        self.volume_mounts.mkdir(exist_ok=True)
        target.mkdir(exist_ok=True)
        try:
            idmap.bind_view(str(src), str(target), userns=userns)
        except OSError as exc:
            raise RuntimeFailure(f"mounting volume {src.name} failed: {os.strerror(exc.errno or 0)}",
                                 details={"errno": exc.errno}) from exc

    def _mount_overlay(self, userns: int | None) -> None:
        if not idmap.overlay_by_fd():
            return self._mount_overlay_by_path(userns)
        fds: list[int] = []
        try:
            for layer in self.layers:
                fds.append(idmap.clone(str(layer), userns=userns, attrs=idmap.HOST_SAFE | idmap.MOUNT_ATTR_RDONLY))
            # upper and work through a detached copy of the idmapped view: the sandbox's files carry its ids,
            # and the overlay's options name them by their path in that mount ("/upper"), not the host's.
            view = idmap.clone(str(self.disk))
            fds.append(view)
            for name in ("upper", "work"):
                fds.append(os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=view))
            mfd = idmap.overlay(fds[:-3], fds[-2], fds[-1])
            try:
                idmap.attach(mfd, str(self.rootfs))
            finally:
                os.close(mfd)
        except OSError as exc:
            raise RuntimeFailure(f"mounting the overlay root failed: {os.strerror(exc.errno or 0)}",
                                 details={"errno": exc.errno, "step": str(exc)}) from exc
        finally:
            for fd in fds:
                os.close(fd)

    def _mount_overlay_by_path(self, userns: int | None) -> None:
        base = self.layer_mounts
        self._unmount_layers(mounted_targets())  # what a crash between attach and overlay left
        base.mkdir(parents=True, exist_ok=True)
        os.chmod(base, 0o700)
        try:
            lowers = []
            for i, layer in enumerate(self.layers):
                (base / str(i)).mkdir(exist_ok=True)
                idmap.bind_view(str(layer), str(base / str(i)), userns=userns,
                                attrs=idmap.HOST_SAFE | idmap.MOUNT_ATTR_RDONLY)
                lowers.append(str(base / str(i)))
            view = base / "v"
            view.mkdir(exist_ok=True)
            idmap.bind_view(str(self.disk), str(view))
            idmap.overlay_paths(lowers, f"{view}/upper", f"{view}/work", str(self.rootfs), MS_NOSUID | MS_NODEV)
        except OSError as exc:
            self._unmount_layers(mounted_targets())
            raise RuntimeFailure(f"mounting the overlay root failed: {os.strerror(exc.errno or 0)}",
                                 details={"errno": exc.errno, "step": str(exc)}) from exc

    def _unmount_layers(self, mounted: set[str]) -> None:
        base = self.layer_mounts
        if not base.is_dir():
            return
        prefix = str(base) + "/"
        for target in sorted((t for t in mounted if t.startswith(prefix)), reverse=True):
            _umount(Path(target))
        for d in base.iterdir():
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            base.rmdir()

    def _mount_disk(self, again: bool) -> None:
        try:
            if again:  # never two live filesystems over one image (loopdev.py)
                loopdev.wait_released(self.image)
            loopdev.mount_image(self.image, self.raw, "ext4", MS_NOSUID | MS_NODEV)
            return
        except loopdev.LoopUnavailable:
            pass
        except OSError as exc:
            raise RuntimeFailure(f"mounting the sandbox disk failed: {exc}", details={"errno": exc.errno}) from exc
        # `-o loop` sets autoclear too: the loop device goes away with the unmount.
        diskimage.run_tool(["mount", "-o", "loop,nosuid,nodev", str(self.image), str(self.raw)])

    def unmount(self, mounted: set[str] | None = None) -> None:
        """`mounted`: the mount table's targets, read once by a caller unmounting several roots (the host's table
        holds every sandbox's mounts: reading it is most of a teardown's CPU)."""
        mounted = mounted_targets() if mounted is None else mounted
        self._unmount_volumes()
        for target in (self.rootfs, self.disk, self.raw):
            if str(target) in mounted:
                _umount(target)
            if target == self.rootfs:
                self._unmount_layers(mounted)

    def _unmount_volumes(self) -> None:
        """Every volume view goes, whatever the mount table says: the sandbox dir is removed with rmtree next,
        which would walk into a volume still mounted there and delete the team's files. So a view that cannot
        be taken down (its dir cannot be removed) fails the teardown instead."""
        if not self.volume_mounts.is_dir():
            return
        for target in self.volume_mounts.iterdir():
            _umount(target)  # not mounted: EINVAL, ignored
            with contextlib.suppress(OSError):
                target.rmdir()
        try:
            self.volume_mounts.rmdir()
        except OSError as exc:
            raise RuntimeFailure(f"volume views under {self.volume_mounts} are still there: {exc}") from exc

    def usage(self) -> tuple[int, int]:
        """(used, limit) bytes of the sandbox's disk; (0, 0) when it is not mounted."""
        mounted = mounted_targets()
        disk = self.raw if str(self.raw) in mounted else self.disk  # disk/: a sandbox from before raw/
        if str(disk) not in mounted:
            return 0, 0
        st = os.statvfs(disk)
        return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize
