"""runtime/oci/teardown.py over tmp dirs: what a destroy releases and which runtime calls it makes, with the
runtime CLI a stand-in that records them (no container exists; cgroup and network lookups find nothing)."""
from __future__ import annotations

import asyncio
import errno
import os
import uuid

import pytest

from sandboxd.errors import Conflict, RuntimeFailure
from sandboxd.runtime.cgroups import detect
from sandboxd.runtime.oci.state import Record
from sandboxd.runtime.egressproxy.client import EgressProxy
from sandboxd.runtime.oci.teardown import Teardown, os_errors_are_runtime_failures


class Cli:
    def __init__(self, state=None):
        self.calls: list[tuple] = []
        self._state = state

    async def state(self, cid):
        self.calls.append(("state", cid))
        return self._state

    async def call(self, *args, check=True):
        self.calls.append(args)


class Box(Teardown):
    """The parts of OciBackend the teardown half uses, over tmp_path."""

    def __init__(self, tmp_path, cli, runtime="crun"):
        self.runtime, self.cli, self.layout = runtime, cli, detect()
        self.run_dir, self.root = tmp_path / "run", tmp_path / "sandboxes"
        self._locks: dict[str, asyncio.Lock] = {}
        self._reclaims: set[asyncio.Task] = set()
        self.egress_proxy = EgressProxy([])  # never started: no sandbox here names hosts

    def dir(self, sid):
        return self.root / sid

    def _lock(self, sid):
        return self._locks.setdefault(sid, asyncio.Lock())

    def _paths(self, sid, rec=None):
        return self.run_dir / "root" / sid / "rootfs", self.run_dir / "sock" / f"{sid}.sock"


def _sandbox(box, status="stopped", runtime="crun", pid=None):
    sid = "tdtest-" + uuid.uuid4().hex[:8]
    d = box.dir(sid)
    (d / "upper").mkdir(parents=True)
    (d / "upper" / "file").write_text("x")
    Record(id=sid, runtime=runtime, status=status, spec={}, pid=pid).save(d)
    rootfs, sock = box._paths(sid)
    rootfs.mkdir(parents=True)
    sock.parent.mkdir(parents=True, exist_ok=True)
    sock.write_text("")
    return sid, d, rootfs, sock


def test_destroy_releases_files_mount_points_and_socket_and_is_idempotent(tmp_path):
    box = Box(tmp_path, Cli())
    sid, d, rootfs, sock = _sandbox(box)
    asyncio.run(box.destroy(sid))
    assert not d.exists() and not sock.exists() and not rootfs.exists() and not rootfs.parent.exists()
    assert box.cli.calls == [("state", sid)]  # nothing ran: no kill, no delete
    asyncio.run(box.destroy(sid))  # nothing left: the same path finds nothing to do
    assert not d.exists() and sid not in box._locks


def test_destroy_of_another_runtimes_sandbox_is_refused(tmp_path):
    box = Box(tmp_path, Cli())
    sid, d, _, _ = _sandbox(box, runtime="runc")
    with pytest.raises(Conflict):
        asyncio.run(box.destroy(sid))
    assert (d / "upper" / "file").exists() and box.cli.calls == []


def test_background_destroy_records_destroying_then_releases_on_a_task(tmp_path):
    box = Box(tmp_path, Cli())
    sid, d, _, sock = _sandbox(box, status="running", pid=None)  # its init died on its own (OOM, crash)

    async def run():
        await box.destroy(sid, background=True)
        assert Record.load(d).status == "destroying" and len(box._reclaims) == 1  # recover() would finish it
        await box.drain()

    asyncio.run(run())
    assert not d.exists() and not sock.exists() and not box._reclaims


def test_background_destroy_of_a_stopped_sandbox_is_done_in_the_foreground(tmp_path):
    box = Box(tmp_path, Cli())
    sid, d, _, _ = _sandbox(box, status="stopped")
    asyncio.run(box.destroy(sid, background=True))
    assert not d.exists() and not box._reclaims


def test_a_paused_container_is_resumed_before_the_kill(tmp_path):
    box = Box(tmp_path, Cli(state={"status": "paused", "pid": None}))
    sid, _, _, _ = _sandbox(box)
    asyncio.run(box.destroy(sid))
    assert box.cli.calls == [("state", sid), ("resume", sid), ("kill", sid, "KILL"), ("delete", "--force", sid)]


def test_os_errors_become_runtime_failures():
    @os_errors_are_runtime_failures
    async def broken():
        raise FileNotFoundError(errno.ENOENT, "gone")

    @os_errors_are_runtime_failures
    async def refused():
        raise Conflict("no")

    with pytest.raises(RuntimeFailure) as info:
        asyncio.run(broken())
    assert info.value.details == {"errno": errno.ENOENT} and "broken failed" in str(info.value)
    with pytest.raises(Conflict):
        asyncio.run(refused())


@pytest.mark.skipif(os.geteuid() != 0, reason="bind-mounting a volume view needs root")
def test_destroy_takes_volume_views_down_and_never_removes_a_volumes_files(tmp_path):
    from sandboxd.runtime import idmap

    box = Box(tmp_path, Cli())
    vol = tmp_path / "volume"
    vol.mkdir()
    (vol / "kept").write_text("team data")
    sid, d, _, _ = _sandbox(box)
    view = d / "volumes" / "0"
    view.mkdir(parents=True)
    fd = idmap.clone(str(vol))
    try:
        idmap.attach(fd, str(view))
    finally:
        os.close(fd)
    asyncio.run(box.destroy(sid))
    assert not d.exists() and (vol / "kept").read_text() == "team data"

    # A view that will not go (here: a dir that cannot be removed) fails the destroy before the sandbox dir's
    # removal could walk into it.
    sid, d, _, _ = _sandbox(box)
    (d / "volumes" / "0").mkdir(parents=True)
    (d / "volumes" / "0" / "kept").write_text("team data")
    with pytest.raises(RuntimeFailure):
        asyncio.run(box.destroy(sid))
    assert (d / "volumes" / "0" / "kept").read_text() == "team data"
