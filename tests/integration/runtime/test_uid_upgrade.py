"""A sandbox made before per-sandbox uid ranges (no `uid_slot` in its record, hosts files in its dir, no meta/
on its disk, its dir 0755) starts again in a range of its own with its files as they were: its disk stores
the template store's ids, whatever range it runs in."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support.runtime import spec
from sandboxd.runtime import uidslots
from sandboxd.runtime.oci.state import Record

pytestmark = pytest.mark.real


def _host_uid(pid: int) -> int:
    return int(next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("Uid:")).split()[1])


def _make_it_old(d: Path, rec: Record) -> None:
    """Turn a stopped sandbox into one from before ranges, as that code left it."""
    uidslots.release(d, rec.extra.pop("uid_slot"))
    rec.save(d)
    mnt = d / "old-disk"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(d / "disk.img"), str(mnt)], check=True)
    try:
        for name in ("hosts", "hostname", "resolv.conf"):
            shutil.copy(mnt / "meta" / name, d / name)
        shutil.rmtree(mnt / "meta")
        os.chmod(mnt, 0o755)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    mnt.rmdir()
    os.chown(d, 0, 0)
    os.chmod(d, 0o755)


def test_a_sandbox_from_before_uid_ranges_starts_in_its_own(rt_env):
    settings, sb, image = rt_env
    box = sb.create(spec(image, "upgr", hostname="old-box"))
    assert sb.sh(box.id, "echo kept > /root/k && mkdir -p /home/u && echo u > /home/u/f"
                         " && chown -R 1000:1000 /home/u").exit_code == 0
    sb.stop(box.id)
    d = box.bundle
    _make_it_old(d, Record.load(d))
    try:
        sb.start(box.id)
        rec = Record.load(d)
        slot = rec.extra["uid_slot"]
        assert _host_uid(rec.pid) == uidslots.base(settings, slot) != settings.uid_base
        out = sb.sh(box.id, "cat /root/k /etc/hostname; stat -c '%u %g' /home/u/f /root/k").stdout.decode()
        assert out.split("\n")[:4] == ["kept", "old-box", "1000 1000", "0 0"]
        assert (os.stat(d).st_uid, os.stat(d).st_gid, os.stat(d).st_mode & 0o777) == (0, uidslots.base(settings, slot),
                                                                                        0o710)
    finally:
        sb.destroy(box.id)
