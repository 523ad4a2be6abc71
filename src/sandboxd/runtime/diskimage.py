"""Per-sandbox ext4 disk images without a mkfs per sandbox.

A blank image is made once per (size, root owner, mkfs options) under `<data_dir>/cache/` and each sandbox
gets a sparse copy of it: a reflink where the host filesystem has them (FICLONE: btrfs, xfs), else only
the extents that hold data (SEEK_DATA/SEEK_HOLE + copy_file_range; a blank 2 GiB image has ~1 MiB of
them). The copy is byte-for-byte what mkfs would have written, so the disk size and the ENOSPC at the
limit are unchanged.

All copies share the blank's filesystem UUID and directory hash seed. Nothing here reads the UUID (the
image is mounted by path through a loop device, never by UUID; ext4, unlike XFS, mounts duplicates), and
the hash seed only shapes the sandbox's own directory index.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from sandboxd.errors import RuntimeFailure

FICLONE = 0x40049409
_making = threading.Lock()  # one mkfs per process when a burst of creates finds no blank yet
# No journal and no reserved blocks: a throw-away disk. lazy_itable_init: mkfs writes only a few MiB.
MKFS_OPTIONS = ("-O", "^has_journal", "-m", "0", "-E", "lazy_itable_init=1,root_owner={uid}:{uid}")


def run_tool(argv: list[str]) -> None:
    """Run a host tool (mkfs.ext4, mount); a failure becomes RuntimeFailure carrying its stderr."""
    try:
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
    except subprocess.CalledProcessError as exc:
        err = exc.stderr.decode(errors="replace").strip()
        raise RuntimeFailure(f"{argv[0]} failed: {err}", details={"argv": argv, "stderr": err}) from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeFailure(f"{argv[0]} failed: {exc}", details={"argv": argv}) from exc


def mkfs(image: Path, size_mb: int, uid: int) -> None:
    """Make a fresh sparse image of size_mb with an ext4 filesystem whose root is owned by uid."""
    with open(image, "wb") as fh:
        fh.truncate(size_mb * 1024 * 1024)
    run_tool(["mkfs.ext4", "-q", "-F", *(o.format(uid=uid) for o in MKFS_OPTIONS), str(image)])


def blank_path(cache_dir: Path, size_mb: int, uid: int) -> Path:
    opts = hashlib.sha256(" ".join(MKFS_OPTIONS).encode()).hexdigest()[:8]
    return cache_dir / f"blank-disk-{size_mb}m-{uid}-{opts}.img"


def blank(cache_dir: Path, size_mb: int, uid: int) -> Path:
    """The cached blank image for these parameters, made now if missing. Written to a temporary name and
    renamed, so concurrent creates (threads or daemons) only ever see a complete image."""
    path = blank_path(cache_dir, size_mb, uid)
    if path.exists():
        return path
    with _making:
        if not path.exists():
            _make_blank(cache_dir, path, size_mb, uid)
    return path


def _make_blank(cache_dir: Path, path: Path, size_mb: int, uid: int) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    for stale in cache_dir.glob(path.name + ".*.tmp"):  # a daemon killed mid-mkfs; a live one takes < 1 s
        try:
            if time.time() - stale.stat().st_mtime > 600:
                stale.unlink()
        except FileNotFoundError:
            pass
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=cache_dir)
    os.close(fd)
    try:
        mkfs(Path(tmp), size_mb, uid)
        os.chmod(tmp, 0o400)  # a template for copies: never written in place
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def sparse_copy(src: Path, dst: Path) -> None:
    """Copy src to a new file dst, keeping its holes (reflink when the filesystem can)."""
    sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.ioctl(dfd, FICLONE, sfd)
                return
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS):
                    raise
            size = os.fstat(sfd).st_size
            os.ftruncate(dfd, size)
            off = 0
            while off < size:
                try:
                    start = os.lseek(sfd, off, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:  # only a hole is left
                        break
                    raise
                end = os.lseek(sfd, start, os.SEEK_HOLE)
                _copy_range(sfd, dfd, start, end - start)
                off = end
        finally:
            os.close(dfd)
    except BaseException:
        try:
            os.unlink(dst)
        except FileNotFoundError:
            pass
        raise
    finally:
        os.close(sfd)


def _copy_range(sfd: int, dfd: int, offset: int, count: int) -> None:
    while count > 0:
        try:
            n = os.copy_file_range(sfd, dfd, count, offset, offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            n = os.pwrite(dfd, os.pread(sfd, min(count, 1 << 20), offset), offset)
        if n == 0:
            raise RuntimeFailure("disk image copy stopped short", details={"offset": offset})
        offset += n
        count -= n
