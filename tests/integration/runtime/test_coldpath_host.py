"""The host side of a cold start: cached blank disk + sparse copy, loop mount by ioctl, the runtime run from
a sealed memfd. Real files, real loop devices, the real crun binary."""
from __future__ import annotations

import fcntl
import filecmp
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from support.runtime import leftovers, spec
from sandboxd.runtime import diskimage, loopdev
from sandboxd.runtime.oci.cli import RUNTIME_SEALS, OciCli
from sandboxd.runtime.rootfs import _umount

pytestmark = pytest.mark.real


@pytest.fixture
def scratch():
    d = Path(tempfile.mkdtemp(prefix="coldpath-", dir="/tmp"))
    yield d
    for m in Path("/proc/self/mounts").read_text().splitlines():
        if str(d) in m.split()[1]:
            _umount(Path(m.split()[1]))
    shutil.rmtree(d, ignore_errors=True)


def _loops_for(path: Path) -> list[str]:
    out = subprocess.run(["losetup", "-l", "-J"], capture_output=True, text=True).stdout or "{}"
    return [l["name"] for l in json.loads(out).get("loopdevices", []) if str(path) in (l.get("back-file") or "")]


def test_blank_is_made_once_and_copies_are_sparse_and_identical(scratch):
    cache = scratch / "cache"
    blank = diskimage.blank(cache, 256, 100000)
    assert diskimage.blank(cache, 256, 100000) == blank
    assert os.stat(blank).st_mtime_ns == os.stat(diskimage.blank(cache, 256, 100000)).st_mtime_ns
    assert [p.name for p in cache.iterdir()] == [blank.name]  # no temporary left behind
    copy = scratch / "disk.img"
    diskimage.sparse_copy(blank, copy)
    st = os.stat(copy)
    assert st.st_size == 256 * 1024 * 1024
    assert st.st_blocks * 512 < 16 * 1024 * 1024  # holes kept: ~1 MiB of data, not 256 MiB
    assert filecmp.cmp(blank, copy, shallow=False)
    with pytest.raises(FileExistsError):
        diskimage.sparse_copy(blank, copy)


def test_loop_mount_by_ioctl_gives_the_size_and_releases_the_device(scratch):
    blank = diskimage.blank(scratch / "cache", 64, 100000)
    img, mnt = scratch / "disk.img", scratch / "disk"
    diskimage.sparse_copy(blank, img)
    mnt.mkdir()
    loopdev.mount_image(img, mnt, "ext4", 2 | 4)
    try:
        assert len(_loops_for(img)) == 1
        st = os.statvfs(mnt)
        assert 56 * 2**20 < st.f_blocks * st.f_frsize <= 64 * 2**20
        assert os.stat(mnt).st_uid == 100000  # root_owner from the blank's mkfs
        with pytest.raises(OSError) as exc:  # the quota: ENOSPC at the image's size, not the host's
            with open(mnt / "fill", "wb") as fh:
                for _ in range(80):
                    fh.write(b"\0" * 2**20)
                fh.flush()
                os.fsync(fh.fileno())
        assert exc.value.errno == 28
    finally:
        _umount(mnt)
    loopdev.wait_released(img)  # autoclear lets go from a kernel work queue: on a busy host, a moment later
    assert _loops_for(img) == []


def test_an_image_whose_filesystem_is_still_held_is_not_mounted_again(scratch):
    """A busy unmount is lazy: the old filesystem lives on its loop device until its last user goes. Mounting
    the image on a second device then would run two ext4 instances over one image (a corrupted disk)."""
    blank = diskimage.blank(scratch / "cache", 64, 100000)
    img, mnt = scratch / "disk.img", scratch / "disk"
    diskimage.sparse_copy(blank, img)
    mnt.mkdir()
    assert loopdev.bound_devices(img) == []
    loopdev.wait_released(img, timeout=0.1)  # nothing backs it: returns at once
    loopdev.mount_image(img, mnt, "ext4", 2 | 4)
    held = open(mnt / "open-file", "wb")
    try:
        _umount(mnt)  # EBUSY, so detached lazily
        assert str(mnt) not in Path("/proc/self/mounts").read_text()
        devices = loopdev.bound_devices(img)
        assert len(devices) == 1 and devices == _loops_for(img)
        with pytest.raises(OSError) as exc:
            loopdev.wait_released(img, timeout=0.3)
        assert exc.value.errno == 16 and str(img) not in str(exc.value)  # EBUSY, and no host path in it
    finally:
        held.close()
    loopdev.wait_released(img, timeout=10)
    assert loopdev.bound_devices(img) == [] and _loops_for(img) == []


def test_concurrent_loop_mounts_each_get_their_own_device(scratch):
    blank = diskimage.blank(scratch / "cache", 64, 100000)
    n = 6
    errors: list[BaseException] = []
    for i in range(n):
        diskimage.sparse_copy(blank, scratch / f"d{i}.img")
        (scratch / f"m{i}").mkdir()

    def one(i: int) -> None:
        try:
            loopdev.mount_image(scratch / f"d{i}.img", scratch / f"m{i}", "ext4", 2 | 4)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        devices = [_loops_for(scratch / f"d{i}.img") for i in range(n)]
        assert all(len(d) == 1 for d in devices)
        assert len({d[0] for d in devices}) == n
    finally:
        for i in range(n):
            _umount(scratch / f"m{i}")
    # autoclear detaches a device from a kernel work queue after its last close: on a busy host, a moment later
    deadline = time.monotonic() + 10
    while any(_loops_for(scratch / f"d{i}.img") for i in range(n)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_loops_for(scratch / f"d{i}.img") == [] for i in range(n))


def test_runtime_runs_from_a_sealed_memfd_that_crun_accepts_as_its_clone(tmp_path):
    cli = OciCli("crun", tmp_path / "root")
    exe = cli.argv("state", "x")[0]
    assert exe.startswith(f"/proc/{os.getpid()}/fd/")
    fd = int(exe.rsplit("/", 1)[1])
    assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) == RUNTIME_SEALS
    with pytest.raises(OSError):
        os.write(fd, b"x")
    assert "memfd:" in os.readlink(exe)
    if shutil.which("strace") is None:
        pytest.skip("strace not installed: cannot watch crun skip its self-copy")

    def traced(argv: list[str]) -> str:
        return subprocess.run(["strace", "-f", "-e", "trace=memfd_create,mount,execveat", *argv],
                              capture_output=True, text=True).stderr

    plain = traced(OciCli("crun", tmp_path / "root", sealed=False).argv("state", "x"))
    assert "mount(" in plain or "memfd_create(" in plain  # crun 1.8 clones itself when run from disk
    sealed = traced(cli.argv("state", "x"))
    assert "mount(" not in sealed and "memfd_create(" not in sealed and "execveat(" not in sealed


def test_sandbox_disk_comes_from_the_cache_and_leaves_nothing(rt_env):
    settings, sb, image = rt_env
    from sandboxd.runtime.base import Resources

    res = Resources(vcpu=1.0, memory_mb=256, disk_mb=96, pids=128)
    boxes = [sb.create(spec(image, "coldpath", resources=res)) for _ in range(2)]
    try:
        cached = list((Path(settings.data_dir) / "cache").glob("blank-disk-96m-*"))
        assert len(cached) == 1
        for box in boxes:
            r = sb.sh(box.id, "df -k / | tail -1 | awk '{print $2}'; touch /workspace/x && echo ok")
            total_kb, ok = r.stdout.decode().split()
            assert ok == "ok" and 80 * 1024 < int(total_kb) <= 96 * 1024
    finally:
        for box in boxes:
            sb.destroy(box.id)
    for box in boxes:
        assert leftovers(settings, box.id) == []
