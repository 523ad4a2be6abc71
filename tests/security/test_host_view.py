"""What a sandbox sees of its host: the cgroup tree read-only, no kernel command line, no host path of the
data dir or the template store in its mount table."""
from __future__ import annotations

from pathlib import Path

import pytest

from rtsupport import spec

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def box(rt_env):
    _, sb, image = rt_env
    b = sb.create(spec(image, "view"))
    yield b
    sb.destroy(b.id)


def test_the_cgroup_tree_is_read_only(rt_env, box):
    _, sb, _ = rt_env
    r = sb.sh(box.id, "touch /sys/fs/cgroup/x; mkdir /sys/fs/cgroup/y; ls /sys/fs/cgroup/memory/memory.limit_in_bytes")
    err = r.stderr.decode()
    assert err.count("Read-only file system") == 2, err
    assert r.stdout.decode().strip() == "/sys/fs/cgroup/memory/memory.limit_in_bytes"  # still readable
    mounts = sb.sh(box.id, "cat /proc/self/mountinfo").stdout.decode().splitlines()
    cgroup = [line.split() for line in mounts if line.split()[4].startswith("/sys/fs/cgroup")]
    assert cgroup and all(f[5].split(",")[0] == "ro" for f in cgroup), cgroup


def test_the_kernel_command_line_is_masked(rt_env, box):
    _, sb, _ = rt_env
    assert Path("/proc/cmdline").read_text().strip(), "the host has one"
    r = sb.sh(box.id, "cat /proc/cmdline")
    assert r.exit_code == 0 and r.stdout == b""


def test_the_mount_table_names_no_host_path_of_the_data_dir_or_store(rt_env, box):
    settings, sb, _ = rt_env
    text = sb.sh(box.id, "cat /proc/self/mountinfo /proc/1/mountinfo /proc/self/mounts").stdout.decode()
    for host_path in (settings.data_dir, settings.templates_dir, Path("/run/sandboxd")):
        assert str(host_path) not in text, host_path
    root = next(line for line in text.splitlines() if line.split()[4] == "/")
    assert "lowerdir+=/," in root and "upperdir=/upper," in root  # layers named inside their own mounts
