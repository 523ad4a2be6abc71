"""Each sandbox runs in its own host uid range, and nothing a sandbox (or a template build) wrote is reachable by
another host uid: not by another sandbox's ids, not by an unprivileged host user, setuid files included."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from support.runtime import SyncBackend, spec
from sandboxd.runtime import uidslots
from sandboxd.runtime.oci.state import Record

pytestmark = pytest.mark.real


def _host_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def _as(uid: int, argv: list[str]) -> subprocess.CompletedProcess:
    """argv as host uid:gid uid:uid with no supplementary groups (what an escaped sandbox process holds)."""
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv],
                          capture_output=True, text=True, timeout=30)


def _as_nobody(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "nobody", "--", *argv], capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def pair(rt_env):
    _, sb, image = rt_env
    a, b = sb.create(spec(image, "uida")), sb.create(spec(image, "uidb"))
    yield a, b
    for box in (a, b):
        sb.destroy(box.id)


def test_two_sandboxes_run_in_disjoint_host_uid_ranges(rt_env, pair):
    settings, sb, _ = rt_env
    a, b = pair
    ua, ub = _host_uid(a.pid), _host_uid(b.pid)
    assert settings.uid_base not in (ua, ub), "range 0 is the template store's, never a sandbox's"
    assert abs(ua - ub) >= settings.uid_count, "the two ranges overlap"
    for box, uid in ((a, ua), (b, ub)):
        slot = Record.load(box.bundle).extra["uid_slot"]
        assert uid == uidslots.base(settings, slot)
        # The host sees the sandbox's disk in its own range: its root owns the upper dir, its uid 1000 its files.
        assert sb.sh(box.id, "mkdir -p /home/u && touch /home/u/f && chown -R 1000:1000 /home/u").exit_code == 0
        upper = box.bundle / "disk" / "upper"
        assert (os.stat(upper).st_uid, os.stat(upper).st_gid) == (uid, uid)
        assert os.stat(upper / "home" / "u" / "f").st_uid == uid + 1000


def test_one_sandbox_uid_cannot_touch_another_sandbox_files(rt_env, pair):
    _, sb, _ = rt_env
    a, b = pair
    assert sb.sh(b.id, "echo private > /root/secret && chmod 600 /root/secret").exit_code == 0
    ua = _host_uid(a.pid)
    for path in (b.bundle / "disk" / "upper" / "root" / "secret", b.bundle / "rootfs" / "root" / "secret"):
        assert path.read_text() == "private\n"  # it is there, for host root
        r = _as(ua, ["cat", str(path)])
        assert r.returncode != 0 and "Permission denied" in r.stderr, (path, r.stdout, r.stderr)
        r = _as(ua, ["sh", "-c", f"echo owned > {path}"])
        assert r.returncode != 0 and "Permission denied" in r.stderr, (path, r.stdout, r.stderr)
    assert sb.sh(b.id, "cat /root/secret").stdout == b"private\n"


def test_a_host_user_cannot_run_a_setuid_file_a_sandbox_made(rt_env, pair):
    settings, sb, _ = rt_env
    a, _ = pair
    # In a directory every uid may search (inside the sandbox), so only the host side can stop nobody.
    r = sb.sh(a.id, "cp /usr/bin/id /usr/local/bin/suid-id && chmod u+s,a+rx /usr/local/bin/suid-id"
                    " && ls -ln /usr/local/bin/suid-id")
    assert r.exit_code == 0 and r.stdout.decode().startswith("-rwsr-xr-x 1 0 0"), r  # setuid kept inside
    rootfs = Path(Record.load(a.bundle).extra["rootfs"])
    for path in (a.bundle / "disk" / "upper", rootfs, a.bundle / "raw" / "upper"):
        path = path / "usr" / "local" / "bin" / "suid-id"
        if not path.exists() and path.parts[-5] == "raw":
            continue  # a layout without raw/ (the upper dir is under disk/)
        assert path.exists(), path
        r = _as_nobody([str(path)])
        assert r.returncode != 0 and "Permission denied" in r.stderr, (path, r.stdout, r.stderr)


def test_template_layers_are_closed_to_host_users(rt_env):
    _, _, image = rt_env
    su = image.layers[0] / "usr" / "bin" / "su"
    st = os.stat(su)
    assert st.st_mode & 0o4000, "the image's setuid bits are kept"
    r = _as_nobody([str(su), "--version"])
    assert r.returncode != 0 and "Permission denied" in r.stderr, (r.stdout, r.stderr)
    store = image.layers[0].parent.parent.parent
    assert [os.stat(store / d).st_mode & 0o777 for d in ("layers", "images", "tmp")] == [0o700] * 3


def test_the_uid_range_is_kept_across_stop_start_and_recovery_and_freed_on_destroy(rt_env):
    settings, sb, image = rt_env
    box = sb.create(spec(image, "uidkeep"))
    slot = Record.load(box.bundle).extra["uid_slot"]
    uid = _host_uid(box.pid)
    claim = uidslots.SLOTS_DIR / str(slot)
    assert os.readlink(claim) == str(box.bundle)
    sb.stop(box.id)
    assert claim.is_symlink(), "a stopped sandbox keeps its range"
    sb.start(box.id)
    rec = Record.load(box.bundle)
    assert rec.extra["uid_slot"] == slot and _host_uid(rec.pid) == uid
    # A restarted daemon (a new backend on the same data dir) adopts it in the same range, even when the
    # claims under /run are gone (a host reboot empties /run; the record keeps the slot).
    claim.unlink()
    from sandboxd.runtime import get_backend

    other = SyncBackend(get_backend(settings))
    try:
        other.recover()
        assert os.readlink(claim) == str(box.bundle)
        assert Record.load(box.bundle).extra["uid_slot"] == slot
    finally:
        other.close()
    sb.destroy(box.id)
    assert not claim.exists() and not claim.is_symlink()
