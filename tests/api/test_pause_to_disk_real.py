"""Pause to disk through `sandboxd serve` and the official SDKs (docs/snapshots.md): a paused sandbox holds no
processes or RAM, survives a restart of the server, and resumes with its running processes and their memory."""
from __future__ import annotations

import os

import httpx
import pytest

from support.server import CPServer, running_server

TEMPLATES = os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates")
# One server per module (its metrics are in memory): the module's tests stay on one worker.
pytestmark = [pytest.mark.real, pytest.mark.xdist_group("pause_to_disk")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from running_server(tmp_path_factory, "crun", SANDBOXD_TEMPLATES_PATH=TEMPLATES)


def _events(srv: CPServer, sid: str, kind: str) -> list[dict]:
    with srv.client() as c:
        rows = c.get(f"/events/sandboxes/{sid}", params={"limit": 100, "orderAsc": "true"}).json()
    return [e["eventData"] for e in rows if e["type"].endswith(kind)]


def _processes_in_cgroup(sid: str) -> list[int]:
    from sandboxd.runtime.cgroups import SandboxCgroup

    return SandboxCgroup(sid).pids()


def test_e2b_pause_survives_a_restart_and_connect_resumes_processes_and_kernel(server):
    from e2b_code_interpreter import Sandbox

    with server.e2b_env():
        sbx = Sandbox.create(timeout=300)
        try:
            assert sbx.run_code("kept = 40 + 2").error is None
            sbx.commands.run("sleep 7777", background=True)
            assert sbx.pause() is not False
            assert str(getattr(Sandbox.get_info(sbx.sandbox_id).state, "value", "")) == "paused"
            assert _processes_in_cgroup(sbx.sandbox_id) == []  # on disk: nothing runs, no RAM is held
            paused = _events(server, sbx.sandbox_id, "paused")
            assert paused and paused[-1]["pause"]["on_disk"] is True
            server.stop()
            server.start()
            again = Sandbox.connect(sbx.sandbox_id, timeout=300)
            assert again.run_code("kept").text == "42"
            ps = again.commands.run("pgrep -fx 'sleep 7777' || true").stdout.split()
            assert len(ps) == 1
            resumed = _events(server, sbx.sandbox_id, "resumed")
            assert resumed and resumed[-1]["resume"]["from_disk"] is True
        finally:
            with server.client() as c:
                c.delete(f"/v1/sandboxes/{sbx.sandbox_id}")


def test_connect_while_the_timeout_pause_is_writing_waits_and_resumes_the_same_boot(server):
    """A connect that arrives while a pause at the timeout is still writing the sandbox to disk (its agent
    already parked, so the SDK sees it not running) waits for the pause and resumes it: same sandbox, same
    boot, not a 200 for a sandbox about to be paused."""
    import time

    from e2b import Sandbox

    with server.e2b_env():
        sbx = Sandbox.create(timeout=60, lifecycle={"on_timeout": "pause"})
        try:
            boot = sbx.files.read("/proc/sys/kernel/random/boot_id").strip()
            sbx.set_timeout(0)
            deadline = time.monotonic() + 30
            while sbx.is_running() and time.monotonic() < deadline:
                time.sleep(0.02)
            again = sbx.connect()
            assert again.sandbox_id == sbx.sandbox_id
            assert again.files.read("/proc/sys/kernel/random/boot_id").strip() == boot
        finally:
            with server.client() as c:
                c.delete(f"/v1/sandboxes/{sbx.sandbox_id}")


def test_hopx_pause_and_resume_keep_a_kernel_variable(server, monkeypatch):
    from hopx_ai import Sandbox

    for k, v in server.client_env.items():
        if k.startswith(("HOPX_", "SANDBOXD_")):
            monkeypatch.setenv(k, v)
    sbx = Sandbox.create(template="code-interpreter", api_key=server.key, base_url=server.base)
    try:
        assert sbx.run_code("counter = 7", language="python").success
        sbx.pause()
        assert sbx.get_info().status == "paused"
        assert _processes_in_cgroup(sbx.sandbox_id) == []
        sbx.resume()
        r = sbx.run_code("print(counter * 6)", language="python")
        assert r.success and r.stdout.strip() == "42"
    finally:
        sbx.kill()


def test_metrics_count_pauses_to_disk(server):
    from hopx_ai import Sandbox

    sbx = Sandbox.create(template="base", api_key=server.key, base_url=server.base)
    try:
        sbx.pause()
        sbx.resume()
    finally:
        sbx.kill()
    text = httpx.get(f"{server.base}/metrics", headers={"Authorization": f"Bearer {server.key}"}).text
    assert 'sandboxd_sandbox_pauses_total{where="disk"}' in text
    disk = [ln for ln in text.splitlines() if ln.startswith('sandboxd_sandbox_pauses_total{where="disk"}')]
    assert float(disk[0].split()[-1]) >= 1
    assert "sandboxd_checkpoint_seconds_count" in text and "sandboxd_restore_seconds_count" in text


def test_an_agent_started_cold_goes_to_disk_too(tmp_path_factory):
    from hopx_ai import Sandbox

    # Without the zygote the sandbox's init starts the agent, which takes its socket at its doorbell: the init
    # holds nothing of the host's, so CRIU takes the sandbox.
    servers = running_server(tmp_path_factory, "crun", SANDBOXD_TEMPLATES_PATH=TEMPLATES, SANDBOXD_ZYGOTE="false")
    srv = next(servers)
    try:
        sbx = Sandbox.create(template="code-interpreter", api_key=srv.key, base_url=srv.base)
        assert sbx.run_code("kept = 'cold'").success
        sbx.pause()
        assert sbx.get_info().status == "paused"
        assert not _processes_in_cgroup(sbx.sandbox_id)
        assert _events(srv, sbx.sandbox_id, "paused")[-1]["pause"]["on_disk"] is True
        sbx.resume()
        assert sbx.run_code("print(kept)").stdout.strip() == "cold"
        sbx.kill()
    finally:
        servers.close()


def test_without_criu_pause_freezes_in_ram_and_says_why(tmp_path_factory):
    from hopx_ai import Sandbox

    servers = running_server(tmp_path_factory, "crun", SANDBOXD_TEMPLATES_PATH=TEMPLATES, SANDBOXD_CRIU="off")
    srv = next(servers)
    try:
        sbx = Sandbox.create(template="base", api_key=srv.key, base_url=srv.base)
        sbx.commands.run("echo before > /tmp/mark")
        sbx.pause()
        assert sbx.get_info().status == "paused"
        assert _processes_in_cgroup(sbx.sandbox_id)  # frozen, still in RAM
        paused = _events(srv, sbx.sandbox_id, "paused")[-1]["pause"]
        assert paused["on_disk"] is False and "SANDBOXD_CRIU=off" in paused["reason"]
        sbx.resume()
        assert sbx.commands.run("cat /tmp/mark").stdout.strip() == "before"
        sbx.kill()
    finally:
        servers.close()
