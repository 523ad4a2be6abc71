"""Data dirs the sandbox's uid cannot search, data dirs too deep for a unix socket path, the batched
stats reader, and the /run/sandboxd folders a closed backend leaves (none)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from support.runtime import SyncBackend, base_image, cleanup, leftovers, spec
from sandboxd.config import Settings
from sandboxd.errors import NotFound
from sandboxd.runtime.oci import paths
from sandboxd.runtime.oci.state import Record

pytestmark = pytest.mark.real


def _settings(data: Path) -> Settings:
    templates = os.environ.get("SANDBOXD_TEMPLATES_PATH") or "/var/lib/sandboxd/templates"
    return Settings(data_dir=data, backend="crun", templates_path=Path(templates))


def _run_one(data: Path):
    """Create a sandbox in data dir `data`, check it answers, destroy it, close the backend.
    Returns (settings, record extra, view) for the caller's checks."""
    from sandboxd.runtime import get_backend

    settings = _settings(data)
    sb = SyncBackend(get_backend(settings))
    try:
        s = spec(base_image(settings), "paths")
        view = sb.create(s)
        assert sb.sh(s.id, "echo hi").stdout == b"hi\n"
        extra = Record.load(Path(settings.sandboxes_dir) / s.id).extra
        sb.stop(s.id)
        sb.start(s.id)  # boots again on the recorded paths
        assert sb.sh(s.id, "echo again").stdout == b"again\n"
        sb.destroy(s.id)
        assert leftovers(settings, s.id) == []
        assert not Path(extra["rootfs"]).exists() and not Path(extra["agent_socket"]).exists()
        sb.loop.run_until_complete(sb.backend.close())
        return settings, extra, view
    finally:
        cleanup(settings, sb)
        sb.close()


def test_data_dir_under_a_private_parent_works():
    parent = Path(tempfile.mkdtemp(prefix="rt-priv-", dir="/tmp"))
    os.chmod(parent, 0o700)  # like pytest's /tmp/pytest-of-root
    try:
        assert paths.blocking_dir(parent / "data" / "sandboxes", 100000) == parent
        settings, extra, view = _run_one(parent / "data")
        run = paths.runtime_dir(Path(settings.data_dir))
        assert extra["rootfs"] == str(run / "root" / view.id / "rootfs")
        assert extra["agent_socket"] == str(Path(settings.sandboxes_dir) / view.id / "agent.sock")
        assert not run.exists(), "close() leaves no empty folder under /run/sandboxd"
        assert os.stat(parent).st_mode & 0o777 == 0o700, "a directory we do not own keeps its mode"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_data_dir_too_deep_for_a_socket_path_works():
    parent = Path(tempfile.mkdtemp(prefix="rt-deep-", dir="/tmp"))
    os.chmod(parent, 0o755)
    try:
        data = parent / ("d" * 70)
        assert len(str(data / "sandboxes" / "rt-paths-12345678" / "agent.sock")) > paths.SUN_PATH_MAX
        settings, extra, view = _run_one(data)
        run = paths.runtime_dir(Path(settings.data_dir))
        assert extra["agent_socket"] == str(run / "sock" / view.id) == str(view.agent_socket)
        assert extra["rootfs"] == str(Path(settings.sandboxes_dir) / view.id / "rootfs")
        assert not run.exists()
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_close_keeps_the_runtime_folder_while_a_sandbox_lives(rt_env):
    settings, sb, image = rt_env
    s = spec(image, "keep")
    sb.create(s)
    try:
        sb.loop.run_until_complete(sb.backend.close())
        assert sb.backend.cli.root.is_dir(), "a live container's runtime state must stay"
        assert sb.sh(s.id, "echo alive").stdout == b"alive\n"
    finally:
        sb.destroy(s.id)


def test_stats_many_matches_stats(rt_env):
    settings, sb, image = rt_env
    s = spec(image, "many")
    sb.create(s)
    try:
        sb.sh(s.id, "head -c 8000000 /dev/urandom > /workspace/f; sync")
        one = sb.stats(s.id)
        got = sb.stats_many([s.id, "rt-no-such-sandbox"])
        many = got[s.id]
        assert isinstance(got["rt-no-such-sandbox"], NotFound)
        assert many.cpu_quota_cores == one.cpu_quota_cores == 1.0
        assert many.memory_limit_bytes == one.memory_limit_bytes == 512 << 20
        assert many.disk_limit_bytes == one.disk_limit_bytes > 200 << 20
        assert abs(many.disk_used_bytes - one.disk_used_bytes) < 1 << 20 and many.disk_used_bytes >= 8_000_000
        assert 0 < one.cpu_usage_ns <= many.cpu_usage_ns
        assert abs(many.memory_used_bytes - one.memory_used_bytes) < 16 << 20 and many.memory_used_bytes > 1 << 20
        assert many.pids == one.pids >= 2
        assert many.oom_kills == one.oom_kills == 0
    finally:
        sb.destroy(s.id)
    assert isinstance(sb.stats_many([s.id])[s.id], NotFound)


def test_socket_and_root_paths_choice():
    # Pure path logic (no sandbox): which paths a data dir gets.
    short = Path("/tmp/x")
    assert paths.socket_path(short, short / "sandboxes" / "a", "a") == short / "sandboxes" / "a" / "agent.sock"
    deep = Path("/tmp/" + "y" * 100)
    assert paths.socket_path(deep, deep / "sandboxes" / "a", "a") == paths.runtime_dir(deep) / "sock" / "a"
    assert len(str(paths.runtime_dir(deep) / "sock" / ("z" * 64))) <= paths.SUN_PATH_MAX
    d = Path(tempfile.mkdtemp(prefix="rt-mode-", dir="/tmp"))
    try:
        sbx = d / "sandboxes" / "a"
        os.chmod(d, 0o700)
        assert paths.blocking_dir(sbx, 100000) == d
        assert paths.rootfs_path(d, sbx, "a", 100000) == paths.runtime_dir(d) / "root" / "a" / "rootfs"
        os.chmod(d, 0o711)
        assert paths.blocking_dir(sbx, 100000) is None
        assert paths.rootfs_path(d, sbx, "a", 100000) == sbx / "rootfs"
        os.chmod(d, 0o700)
        os.chown(d, 100000, 100000)  # owned by the sandbox's uid: searchable by it
        assert paths.blocking_dir(sbx, 100000) is None
    finally:
        shutil.rmtree(d, ignore_errors=True)
