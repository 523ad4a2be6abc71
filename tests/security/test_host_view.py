"""What a sandbox sees of its host: the cgroup tree read-only, no kernel command line, no host path of the
data dir or the template store in its mount table, its own memory, CPUs and uptime in /proc (lxcfs)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sandboxd.runtime import lxcfs
from support.runtime import SyncBackend, base_image, cleanup, make_settings, spec

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def box(rt_env):
    _, sb, image = rt_env
    b = sb.create(spec(image, "view"))
    yield b
    sb.destroy(b.id)


def _cgroup_is_read_only(sb, box) -> None:
    r = sb.sh(box.id, "touch /sys/fs/cgroup/x; mkdir /sys/fs/cgroup/y; ls /sys/fs/cgroup/memory/memory.limit_in_bytes")
    err = r.stderr.decode()
    assert err.count("Read-only file system") == 2, err
    assert r.stdout.decode().strip() == "/sys/fs/cgroup/memory/memory.limit_in_bytes"  # still readable
    mounts = sb.sh(box.id, "cat /proc/self/mountinfo").stdout.decode().splitlines()
    # The top-most mount at each point is the one reached (runc leaves the writable tmpfs covered below).
    top = {f[4]: f[5] for f in (line.split() for line in mounts) if f[4].startswith("/sys/fs/cgroup")}
    assert len(top) > 1 and all(opts.split(",")[0] == "ro" for opts in top.values()), top


def test_the_cgroup_tree_is_read_only(rt_env, box):
    _cgroup_is_read_only(rt_env[1], box)


def test_the_cgroup_tree_is_read_only_under_runc(rt_env):
    from sandboxd.runtime import get_backend

    settings = make_settings("runc")
    sb = SyncBackend(get_backend(settings))
    try:
        _cgroup_is_read_only(sb, sb.create(spec(base_image(settings), "viewrunc")))
    finally:
        cleanup(settings, sb)
        sb.close()


def test_the_kernel_command_line_is_masked(rt_env, box):
    _, sb, _ = rt_env
    assert Path("/proc/cmdline").read_text().strip(), "the host has one"
    r = sb.sh(box.id, "cat /proc/cmdline")
    assert r.exit_code == 0 and r.stdout == b""


def test_the_mount_table_names_no_host_path_of_the_data_dir_or_store(rt_env, box):
    import sandboxd

    settings, sb, _ = rt_env
    text = sb.sh(box.id, "cat /proc/self/mountinfo /proc/1/mountinfo /proc/self/mounts").stdout.decode()
    install = Path(sandboxd.__file__).resolve().parent  # the agent package's host directory
    for host_path in (settings.data_dir, settings.templates_dir, Path("/run/sandboxd"), install):
        assert str(host_path) not in text, host_path
    root = next(line for line in text.splitlines() if line.split()[4] == "/")
    assert "lowerdir+=/," in root and "upperdir=/upper," in root  # layers named inside their own mounts


def test_proc_shows_the_sandboxs_own_memory_cpus_and_uptime(rt_env, box):
    _, sb, _ = rt_env
    host_total = int(Path("/proc/meminfo").read_text().split()[1])
    host_uptime = float(Path("/proc/uptime").read_text().split()[0])
    assert host_total > 512 * 1024
    out = sb.sh(box.id, "head -1 /proc/meminfo; grep -c ^processor /proc/cpuinfo; cat /proc/uptime; "
                        "/opt/sandboxd/venv/bin/python -c 'import os; print(os.cpu_count())'; free -k | sed -n 2p")
    lines = out.stdout.decode().splitlines()
    assert lines[0].split()[:2] == ["MemTotal:", str(512 * 1024)], lines  # the sandbox's limit, not the host's RAM
    assert lines[1] == "1" and lines[3] == "1", lines  # vcpu=1: one CPU, as os.cpu_count() sees it
    assert float(lines[2].split()[0]) < host_uptime, lines  # the sandbox's age, not the host's
    assert lines[4].split()[1] == str(512 * 1024), lines  # what `free` reports
    r = sb.sh(box.id, "echo 1 > /proc/meminfo")
    assert r.exit_code != 0


def _stop(directory: Path) -> None:
    pid = int(lxcfs.pidfile(directory).read_text().strip())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while lxcfs.answers(directory) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_lxcfs_that_died_is_started_again(tmp_path, monkeypatch):
    """A mount left by a dead lxcfs answers ENOTCONN: set-up detaches it and starts lxcfs again, and a create
    that finds it gone restarts it in the background rather than binding dead files."""
    saved = lxcfs._active
    directory = tmp_path / "lxcfs"
    try:
        assert lxcfs.ensure(directory) is None
        _stop(directory)
        assert lxcfs.mounted(directory) and not lxcfs.answers(directory)  # what a killed session leaves
        assert lxcfs.ensure(directory) is None  # host set-up
        assert lxcfs.answers(directory)
        assert len(asyncio.run(lxcfs.binds())) == len(lxcfs.FILES)

        _stop(directory)
        monkeypatch.setattr(lxcfs, "CHECK_EVERY", 0.0)
        monkeypatch.setattr(lxcfs, "REVIVE_EVERY", 0.0)
        assert asyncio.run(lxcfs.binds()) == []  # the host's files, never a dead bind
        deadline = time.monotonic() + 10
        while not lxcfs.answers(directory) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [target for _, target in asyncio.run(lxcfs.binds())] == ["/" + f for f in lxcfs.FILES]
    finally:
        if lxcfs.mounted(directory):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(lxcfs.pidfile(directory).read_text().strip()), signal.SIGKILL)
            subprocess.run(["umount", "-l", str(directory)], check=False)
        lxcfs.ensure(saved)


def test_each_boot_has_its_own_boot_id_never_the_hosts(rt_env):
    _, sb, image = rt_env
    host = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    b = sb.create(spec(image, "boot"))
    try:
        def boot_id() -> str:
            r = sb.sh(b.id, "cat /proc/sys/kernel/random/boot_id")
            assert r.exit_code == 0, r.stderr
            return r.stdout.decode().strip()

        first = boot_id()
        assert len(first) == 36 and first != host
        sb.pause(b.id)
        sb.resume(b.id)
        assert boot_id() == first  # the same boot: processes and memory were kept
        sb.stop(b.id)
        sb.start(b.id)
        assert boot_id() not in (first, host)  # a cold boot
        assert sb.sh(b.id, "echo x > /proc/sys/kernel/random/boot_id").exit_code != 0
    finally:
        sb.destroy(b.id)
