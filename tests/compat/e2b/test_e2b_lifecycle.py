"""`Sandbox.create(lifecycle=...)` through the official SDK, on real sandboxes: the timeout pauses instead of
killing (memory kept, or the files only), and traffic through the gateway resumes a sandbox created to
resume on traffic."""
from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from e2b import Sandbox, SandboxState
from support.real import require_real

BOOT_ID = "/proc/sys/kernel/random/boot_id"


@pytest.fixture
def real(e2b_env):
    require_real()
    if e2b_env["backend"] == "fake":
        pytest.skip("a boot id tells a resume from a new boot only in a real sandbox")
    return e2b_env


def _paused_at_timeout(sbx: Sandbox) -> None:
    sbx.set_timeout(0)  # the timeout, now
    deadline = time.monotonic() + 30
    while sbx.get_info().state != SandboxState.PAUSED and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sbx.get_info().state == SandboxState.PAUSED


def test_the_timeout_pauses_and_connect_resumes_in_place(real):
    sbx = Sandbox.create(timeout=120, lifecycle={"on_timeout": "pause"})
    try:
        assert sbx.get_info().lifecycle == {"on_timeout": "pause", "auto_resume": False}
        sbx.commands.run("sleep 600", background=True)
        boot = sbx.files.read(BOOT_ID).strip()
        _paused_at_timeout(sbx)
        assert not sbx.is_running()  # no auto-resume: its traffic is refused
        assert sbx.get_info().state == SandboxState.PAUSED
        again = sbx.connect()
        assert again.sandbox_id == sbx.sandbox_id
        assert again.files.read(BOOT_ID).strip() == boot
        assert "sleep 600" in again.commands.run("ps -eo args").stdout  # its processes kept running
    finally:
        sbx.kill()


def test_a_filesystem_only_pause_at_the_timeout_boots_again_with_its_files(real):
    sbx = Sandbox.create(timeout=120, lifecycle={"on_timeout": {"action": "pause", "keep_memory": False}})
    try:
        assert sbx.get_info().lifecycle == {"on_timeout": "pause", "auto_resume": False}
        sbx.files.write("/home/user/kept.txt", "kept")
        boot = sbx.files.read(BOOT_ID).strip()
        _paused_at_timeout(sbx)
        again = sbx.connect()
        assert again.files.read("/home/user/kept.txt") == "kept"
        assert again.files.read(BOOT_ID).strip() != boot
    finally:
        sbx.kill()


def test_traffic_resumes_a_sandbox_created_to_resume(real):
    sbx = Sandbox.create(timeout=120, lifecycle={"on_timeout": "pause", "auto_resume": True})
    try:
        assert sbx.get_info().lifecycle == {"on_timeout": "pause", "auto_resume": True}
        port = random.randint(20000, 40000)
        sbx.commands.run(f"mkdir -p /tmp/site && echo awake > /tmp/site/index.html && cd /tmp/site && "
                         f"exec python3 -m http.server {port} --bind 127.0.0.1", background=True)
        gateway, host = real["sandbox"], sbx.get_host(port)
        deadline = time.monotonic() + 20
        while httpx.get(f"{gateway}/index.html", headers={"Host": host}, timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the server in the sandbox never answered"
            time.sleep(0.1)
        _paused_at_timeout(sbx)
        sbx.set_timeout(120)  # the timeout a resume starts again (and, meanwhile, when the paused one ends)

        # Requests at once to its port, by host: each is served, by one resume.
        def get(_: int) -> httpx.Response:
            return httpx.get(f"{gateway}/index.html", headers={"Host": host}, timeout=30)

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(get, range(4)))
        assert [(r.status_code, r.text) for r in answers] == [(200, "awake\n")] * 4
        info = sbx.get_info()
        assert info.state == SandboxState.RUNNING
        assert (info.end_at - info.started_at).total_seconds() > 60  # its timeout (120 s) started again

        _paused_at_timeout(sbx)
        assert sbx.files.read("/tmp/site/index.html") == "awake\n"  # envd's port resumes it too
        assert sbx.get_info().state == SandboxState.RUNNING

        # A signed download URL, fetched with no credentials by whoever holds it, resumes it as well.
        url = sbx.download_url("/tmp/site/index.html")
        _paused_at_timeout(sbx)
        got = httpx.get(url, timeout=30)
        assert (got.status_code, got.text) == (200, "awake\n")
        assert sbx.get_info().state == SandboxState.RUNNING
    finally:
        sbx.kill()


def test_bad_lifecycles_are_400s(e2b_env):
    api, h = e2b_env["api"], {"X-API-KEY": e2b_env["key"]}
    for body in ({"autoPause": True, "autoPauseMemory": False, "autoResume": {"enabled": True}},
                 {"autoPause": False, "autoResume": {"enabled": True}},
                 {"autoResume": {"enabled": True}},
                 {"autoPause": "yes"},
                 {"autoPause": True, "autoPauseMemory": 0},
                 {"autoPause": True, "autoResume": {"enabled": "true"}},
                 {"autoPause": True, "autoResume": True}):
        r = httpx.post(f"{api}/v2/sandboxes", json={"templateID": "base", "timeout": 30, **body}, headers=h)
        assert r.status_code == 400, body
        assert r.json()["code"] == 400 and r.json()["message"]
