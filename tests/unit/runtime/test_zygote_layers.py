"""Which layers above a builtin one may share its zygote: those that leave the Python installation alone."""
from __future__ import annotations

import os

import pytest

from sandboxd.runtime.oci.zygote import keeps_python


def test_files_elsewhere_keep_python(tmp_path):
    (tmp_path / "home" / "user").mkdir(parents=True)
    (tmp_path / "home" / "user" / "blob").write_bytes(b"x" * 10)
    (tmp_path / "usr" / "local" / "bin").mkdir(parents=True)
    (tmp_path / "usr" / "local" / "bin" / "tool").write_text("#!/bin/sh\n")
    (tmp_path / "usr" / "lib" / "node_modules").mkdir(parents=True)
    assert keeps_python(tmp_path)
    assert keeps_python(tmp_path / "missing")  # an empty layer


@pytest.mark.parametrize("made", ["usr/lib/python3.11/os.py", "usr/local/lib/python3.11/site-packages/x.py",
                                  "usr/bin/python3", "usr/local/bin/python3.12"])
def test_python_touched(tmp_path, made):
    (tmp_path / made).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / made).write_text("")
    assert not keeps_python(tmp_path)


@pytest.mark.parametrize("link", ["usr", "usr/local", "usr/lib", "lib", "bin", "lib64"])
def test_a_replaced_directory_on_the_way(tmp_path, link):
    """A link where a directory was (sandbox code may plant one pointing anywhere on the host) is not followed."""
    (tmp_path / link).parent.mkdir(parents=True, exist_ok=True)
    os.symlink("/", tmp_path / link)
    assert not keeps_python(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts and trusted.* xattrs need root")
def test_whiteouts_and_opaque_directories(tmp_path):
    (tmp_path / "usr" / "lib").mkdir(parents=True)
    os.mknod(tmp_path / "usr" / "lib" / "python3.11", 0o600 | 0o020000, os.makedev(0, 0))  # a deleted stdlib
    assert not keeps_python(tmp_path)
    os.unlink(tmp_path / "usr" / "lib" / "python3.11")
    assert keeps_python(tmp_path)
    os.setxattr(tmp_path / "usr" / "lib", "trusted.overlay.opaque", b"y")  # everything below it replaced
    assert not keeps_python(tmp_path)
