"""uid shifting: once per inode (hard links), setuid bits and file capabilities kept."""
import os
import stat

import pytest

from sandboxd.templates.shift import shift_tree

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def test_shift_is_hardlink_and_setuid_safe(tmp_path):
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "home" / "user").mkdir(parents=True)
    su = root / "bin" / "su"
    su.write_bytes(b"\x7fELF")
    os.chmod(su, 0o4755)
    sgid = root / "bin" / "wall"
    sgid.write_bytes(b"x")
    os.chown(sgid, 0, 5)
    os.chmod(sgid, 0o2755)
    os.link(su, root / "bin" / "su-again")
    os.chown(root / "home" / "user", 1000, 1000)
    (root / "home" / "user" / "link").symlink_to("/nonexistent")
    os.lchown(root / "home" / "user" / "link", 1000, 1000)

    shift_tree(root, 100000)

    st = os.lstat(su)
    assert (st.st_uid, st.st_gid) == (100000, 100000)
    assert stat.S_IMODE(st.st_mode) == 0o4755  # chown cleared it; shift restored it
    assert os.lstat(root / "bin" / "su-again").st_ino == st.st_ino
    assert (os.lstat(sgid).st_gid, stat.S_IMODE(os.lstat(sgid).st_mode)) == (100005, 0o2755)
    assert os.lstat(root / "home" / "user").st_uid == 101000
    assert os.lstat(root / "home" / "user" / "link").st_uid == 101000
    assert os.lstat(root).st_uid == 100000


def test_shift_twice_does_not_double_shift(tmp_path):
    (tmp_path / "f").write_text("x")
    shift_tree(tmp_path, 100000)
    assert shift_tree(tmp_path, 100000) == 0
    assert os.lstat(tmp_path / "f").st_uid == 100000


def test_file_capabilities_survive(tmp_path):
    f = tmp_path / "ping"
    f.write_bytes(b"x")
    # v2 capability xattr granting cap_net_raw (bit 13) permitted+effective.
    caps = bytes.fromhex("01000002" "00200000" "00000000" "00000000" "00000000")
    try:
        os.setxattr(f, "security.capability", caps)
    except OSError as exc:
        pytest.skip(f"filesystem does not take security.capability: {exc}")
    shift_tree(tmp_path, 100000)
    assert os.getxattr(f, "security.capability") == caps
