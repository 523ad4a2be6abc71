"""Per-sandbox uid ranges on kernels whose overlay cannot take layers by fd (before 6.13): forced here with
SANDBOXD_OVERLAY_BY_FD=false, the root is built from idmapped layers attached by path, still in the sandbox's
own host range, and stop, start, recover and destroy leave no mount behind."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.runtime import spec
from sandboxd.runtime import idmap, uidslots
from sandboxd.runtime.oci import paths
from sandboxd.runtime.oci.state import Record

pytestmark = pytest.mark.real


def _host_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def _mounts_under(prefix: Path) -> list[str]:
    p = str(prefix) + "/"
    return [t for t in (line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())
            if t.startswith(p) or t == str(prefix)]


@pytest.fixture(scope="module")
def by_path(rt_env):
    os.environ["SANDBOXD_OVERLAY_BY_FD"] = "false"
    idmap._by_fd = None  # probed once per process: probe again with the switch set
    try:
        assert idmap.overlay_by_fd() is False
        yield rt_env
    finally:
        del os.environ["SANDBOXD_OVERLAY_BY_FD"]
        idmap._by_fd = None


def test_roots_by_path_keep_disjoint_ranges_and_leave_no_mounts(by_path):
    settings, sb, image = by_path
    a, b = sb.create(spec(image, "pa")), sb.create(spec(image, "pb"))
    boxes = (a, b)
    try:
        ua, ub = _host_uid(a.pid), _host_uid(b.pid)
        assert abs(ua - ub) >= settings.uid_count and settings.uid_base not in (ua, ub)
        for box, uid in ((a, ua), (b, ub)):
            assert uid == uidslots.base(settings, Record.load(box.bundle).extra["uid_slot"])
            layers = paths.layers_path(box.bundle)
            assert _mounts_under(layers), "the fallback was not taken"
            assert os.stat(layers).st_mode & 0o777 == 0o700
            r = sb.sh(box.id, "mkdir -p /home/u && touch /home/u/f && chown -R 1000:1000 /home/u"
                              " && grep ' / ' /proc/self/mountinfo")
            assert r.exit_code == 0, r
            assert str(settings.data_dir).encode() not in r.stdout  # options name short /run paths only
            upper = box.bundle / "disk" / "upper"
            assert os.stat(upper).st_uid == uid
            assert os.stat(upper / "home" / "u" / "f").st_uid == uid + 1000
        sb.stop(a.id)
        assert not _mounts_under(paths.layers_path(a.bundle)) and not paths.layers_path(a.bundle).exists()
        sb.start(a.id)
        assert sb.sh(a.id, "stat -c %u /home/u/f").stdout == b"1000\n"
        sb.recover()
        assert sb.sh(a.id, "stat -c %u /home/u/f").stdout == b"1000\n"
    finally:
        for box in boxes:
            sb.destroy(box.id)
    for box in boxes:
        assert not _mounts_under(paths.layers_path(box.bundle)), "layer mounts left behind"
        assert not _mounts_under(box.bundle), "sandbox mounts left behind"
