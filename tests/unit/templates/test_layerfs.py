"""Lookups through layer stacks: symlinked dirs, whiteouts, attributes of new parent dirs."""
import os
import threading

import pytest

from sandboxd.errors import Invalid
from sandboxd.templates import layerfs


@pytest.fixture
def stack(tmp_path):
    low = tmp_path / "low"
    (low / "usr" / "bin").mkdir(parents=True)
    (low / "bin").symlink_to("usr/bin")
    (low / "home" / "user").mkdir(parents=True)
    os.chmod(low / "home" / "user", 0o700)
    (low / "etc").mkdir()
    (low / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\n")
    (low / "gone").write_text("x")
    top = tmp_path / "top"
    top.mkdir()
    if os.geteuid() == 0:
        os.mknod(top / "gone", 0o600 | 0o020000, os.makedev(0, 0))  # a whiteout
    return [top, low]


def test_clean_path_cannot_escape():
    assert layerfs.clean_path("../../etc/x", "/app") == "/etc/x"
    assert layerfs.clean_path("a/b", "/w") == "/w/a/b"
    with pytest.raises(Invalid):
        layerfs.clean_path("a\x00b")


def test_resolve_follows_image_symlinks(stack):
    assert layerfs.resolve(stack, "/bin/tool") == "/usr/bin/tool"
    assert layerfs.resolve(stack, "/home/user/x") == "/home/user/x"


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_whiteout_hides_lower_file(stack):
    assert layerfs.lookup(stack, "/gone") is None
    assert layerfs.lookup(stack, "/etc/passwd") is not None


def test_ensure_dirs_copies_lower_attributes(stack, tmp_path):
    new = tmp_path / "new"
    new.mkdir()
    layerfs.ensure_dirs(new, "/home/user/app", stack, default_owner=(os.getuid(), os.getgid()))
    assert oct(os.stat(new / "home" / "user").st_mode & 0o777) == oct(0o700)
    assert oct(os.stat(new / "home" / "user" / "app").st_mode & 0o777) == oct(0o755)


def test_passwd_entry(stack):
    assert layerfs.passwd_entry(stack, "user") == (1000, 1000)
    assert layerfs.passwd_entry(stack, "1234:5") == (1234, 5)
    assert layerfs.passwd_entry(stack, "nobody-here") is None


def test_passwd_symlinked_to_a_host_file_is_not_read(stack, tmp_path):
    """RUN ln -sf /host/file /etc/passwd: the host file's users must not become the image's."""
    top, low = stack
    host_file = tmp_path / "host-passwd"
    host_file.write_text("intruder:x:4242:4242::/:/bin/sh\n")
    (top / "etc").mkdir()
    (top / "etc" / "passwd").symlink_to(str(host_file))
    assert layerfs.passwd_entry(stack, "intruder") is None
    # A lower layer whose /etc is a symlink to a host directory is not followed on the host either.
    mid = tmp_path / "mid"
    mid.mkdir()
    (mid / "etc").symlink_to(str(tmp_path))
    (tmp_path / "passwd").write_text("intruder:x:4242:4242::/:/bin/sh\n")
    assert layerfs.passwd_entry([tmp_path / "empty-top", mid, low], "intruder") is None
    assert layerfs.lookup([mid, low], "/etc/passwd") is None


def test_passwd_fifo_does_not_block(stack):
    top, _ = stack
    (top / "etc").mkdir()
    os.mkfifo(top / "etc" / "passwd")
    done = threading.Event()
    got = []
    threading.Thread(target=lambda: (got.append(layerfs.passwd_entry(stack, "user")), done.set()),
                     daemon=True).start()
    assert done.wait(30), "reading the image's /etc/passwd blocked on a FIFO"
    assert got == [None]
