"""Mounting a disk image through a loop device with two ioctls and mount(2): no `mount -o loop` fork.

`/dev/loop-control` LOOP_CTL_GET_FREE names a free device, LOOP_CONFIGURE (Linux >= 5.8) binds the image
to it in one call. Two creates can be handed the same free device; the loser's LOOP_CONFIGURE fails with
EBUSY and it asks again. LO_FLAGS_AUTOCLEAR makes the device let go of the image when its last user goes:
we hold it open only until the mount holds it, so the unmount releases it (as `mount -o loop` does).

Anything unexpected (no loop-control, an old kernel, no device node) raises LoopUnavailable and the caller
falls back to the `mount` binary.

An image is mounted again (a sandbox's start after a stop, a host restart) only once no loop device backs it any
more (`wait_released`). An unmount that found the filesystem busy is lazy: its superblock lives on, on the old
device, until its last user goes. A second device over the same image would give the image two live ext4
instances, each writing its own bitmaps: the disk is corrupted (EBADMSG, "bad block bitmap checksum").
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import glob
import os
import time
from pathlib import Path

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_AUTOCLEAR = 4
ATTEMPTS = 16

_libc = ctypes.CDLL(None, use_errno=True)


class LoopUnavailable(Exception):
    """The ioctl path cannot be used here; fall back to `mount -o loop`."""


class _LoopInfo64(ctypes.Structure):
    _fields_ = [
        ("lo_device", ctypes.c_uint64), ("lo_inode", ctypes.c_uint64), ("lo_rdevice", ctypes.c_uint64),
        ("lo_offset", ctypes.c_uint64), ("lo_sizelimit", ctypes.c_uint64), ("lo_number", ctypes.c_uint32),
        ("lo_encrypt_type", ctypes.c_uint32), ("lo_encrypt_key_size", ctypes.c_uint32),
        ("lo_flags", ctypes.c_uint32), ("lo_file_name", ctypes.c_uint8 * 64),
        ("lo_crypt_name", ctypes.c_uint8 * 64), ("lo_encrypt_key", ctypes.c_uint8 * 32),
        ("lo_init", ctypes.c_uint64 * 2),
    ]


class _LoopConfig(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_uint32), ("block_size", ctypes.c_uint32), ("info", _LoopInfo64),
                ("reserved", ctypes.c_uint64 * 8)]


assert ctypes.sizeof(_LoopConfig) == 304  # the kernel's struct loop_config


def attach(image: Path, read_only: bool = False) -> tuple[str, int]:
    """Bind image to a free loop device with autoclear. Returns (device path, open fd): the caller must
    close the fd once the device is in use (mounted), else the device is released right away."""
    try:
        ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise LoopUnavailable(f"/dev/loop-control: {exc}") from exc
    backing = os.open(image, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
    try:
        cfg = _LoopConfig(fd=backing)
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR
        name = os.fsencode(str(image))[:63]
        ctypes.memmove(cfg.info.lo_file_name, name, len(name))
        for _ in range(ATTEMPTS):
            try:
                n = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
            except OSError as exc:
                raise LoopUnavailable(f"LOOP_CTL_GET_FREE: {exc}") from exc
            dev = f"/dev/loop{n}"
            try:
                fd = os.open(dev, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
            except FileNotFoundError as exc:  # no devtmpfs node (e.g. inside a container): let mount do it
                raise LoopUnavailable(f"{dev}: {exc}") from exc
            try:
                fcntl.ioctl(fd, LOOP_CONFIGURE, cfg)
            except OSError as exc:
                os.close(fd)
                if exc.errno == errno.EBUSY:  # another create took this device between our two calls
                    continue
                raise LoopUnavailable(f"LOOP_CONFIGURE {dev}: {exc}") from exc
            return dev, fd
        raise LoopUnavailable(f"no free loop device after {ATTEMPTS} attempts")
    finally:
        os.close(backing)
        os.close(ctl)


def bound_devices(image: Path) -> list[str]:
    """The loop devices whose backing file is image (sysfs names it by its path on the host)."""
    target = os.path.realpath(image)
    found = []
    for name_file in glob.glob("/sys/block/loop*/loop/backing_file"):
        try:
            with open(name_file) as fh:
                backing = fh.read().rstrip("\n")
        except OSError:  # the device was cleared between the listing and the read
            continue
        if backing == target:
            found.append("/dev/" + name_file.split("/")[3])
    return found


def wait_released(image: Path, timeout: float = 10.0) -> None:
    """Return once no loop device backs image; autoclear lets a device go a moment after its last user (a kernel
    work queue). Raises EBUSY when one still does after timeout: something outside holds the old filesystem."""
    deadline = time.monotonic() + timeout
    while held := bound_devices(image):
        if time.monotonic() >= deadline:
            raise OSError(errno.EBUSY, f"the disk image is still in use on {', '.join(held)} (a lazy unmount "
                                       "whose filesystem something still holds)")
        time.sleep(0.02)


def mount_image(image: Path, target: Path, fstype: str, flags: int, data: str | None = None) -> None:
    """Attach image and mount it on target; the mount then owns the loop device (released on unmount)."""
    dev, fd = attach(image)
    try:
        if _libc.mount(dev.encode(), os.fsencode(str(target)), fstype.encode(), flags,
                       data.encode() if data else None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount {dev} on {target}: {os.strerror(err)}")
    finally:
        os.close(fd)  # autoclear: on a failed mount this frees the device
