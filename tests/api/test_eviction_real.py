"""More sandboxes than RAM (core/eviction.py, docs/snapshots.md), through `sandboxd serve` and the official
SDKs: with memory short, idle sandboxes go to disk and still read as running; the next request through the
gateway brings one back, transparently, with its processes."""
from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from support.server import CPServer, running_server

TEMPLATES = os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates")
pytestmark = [pytest.mark.real, pytest.mark.xdist_group("eviction")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # Memory always "short": every sandbox idle for 2 s goes to disk.
    yield from running_server(tmp_path_factory, "crun", SANDBOXD_TEMPLATES_PATH=TEMPLATES,
                              SANDBOXD_EVICT_BELOW_FREE_MB=str(1 << 30), SANDBOXD_EVICT_IDLE_SECONDS="2")


def _events(srv: CPServer, sid: str, kind: str) -> list[dict]:
    with srv.client() as c:
        rows = c.get(f"/events/sandboxes/{sid}", params={"limit": 100, "orderAsc": "true"}).json()
    return [e["eventData"] for e in rows if e["type"].endswith(kind)]


def _wait_evicted(srv: CPServer, sid: str, times: int = 1, timeout: float = 30) -> None:
    from sandboxd.runtime.cgroups import SandboxCgroup

    deadline = time.monotonic() + timeout
    while len(_events(srv, sid, "checkpointed")) < times:
        assert time.monotonic() < deadline, "the idle sandbox was never evicted"
        time.sleep(0.2)
    assert SandboxCgroup(sid).pids() == []


def test_an_idle_e2b_sandbox_goes_to_disk_and_traffic_brings_it_back(server):
    from e2b import Sandbox

    with server.e2b_env():
        sbx = Sandbox.create(timeout=300)
        try:
            port = random.randint(20000, 40000)
            sbx.commands.run(f"mkdir -p /tmp/site && echo awake > /tmp/site/index.html && cd /tmp/site && "
                             f"exec python3 -m http.server {port} --bind 127.0.0.1", background=True)
            host = sbx.get_host(port)
            deadline = time.monotonic() + 20
            while httpx.get(f"{server.gateway}/index.html", headers={"Host": host}, timeout=10).status_code != 200:
                assert time.monotonic() < deadline, "the server in the sandbox never answered"
                time.sleep(0.1)
            pid = sbx.commands.run(f"pgrep -f 'http.server {port}'").stdout.split()[0]
            _wait_evicted(server, sbx.sandbox_id)
            assert str(getattr(Sandbox.get_info(sbx.sandbox_id).state, "value", "")) == "running"
            evicted = _events(server, sbx.sandbox_id, "checkpointed")[-1]
            assert evicted["evicted"] is True and evicted["checkpoint"]["size_bytes"] > 0

            def get(_: int) -> httpx.Response:
                return httpx.get(f"{server.gateway}/index.html", headers={"Host": host}, timeout=60)

            with ThreadPoolExecutor(4) as pool:  # at once: one restore serves them all
                answers = list(pool.map(get, range(4)))
            assert [(r.status_code, r.text) for r in answers] == [(200, "awake\n")] * 4
            assert sbx.commands.run(f"pgrep -f 'http.server {port}'").stdout.split()[0] == pid  # the same process
            resumed = _events(server, sbx.sandbox_id, "resumed")
            assert len(resumed) == 1 and resumed[0]["resume"]["evicted"] is True
        finally:
            sbx.kill()


def test_an_evicted_hopx_sandbox_answers_its_sdk_and_can_be_paused(server):
    from hopx_ai import Sandbox

    sbx = Sandbox.create(template="code-interpreter", api_key=server.key, base_url=server.base)
    try:
        assert sbx.run_code("kept = 'still here'", language="python").success
        _wait_evicted(server, sbx.sandbox_id)
        assert sbx.get_info().status == "running"
        r = sbx.run_code("print(kept)", language="python")  # through the gateway: restored on the way
        assert r.success and r.stdout.strip() == "still here"
        _wait_evicted(server, sbx.sandbox_id, times=2)  # idle again
        sbx.pause()  # already on disk: it only becomes paused
        assert sbx.get_info().status == "paused"
        sbx.resume()
        assert sbx.run_code("print(kept)", language="python").stdout.strip() == "still here"
    finally:
        sbx.kill()


def test_evictions_are_counted(server):
    from hopx_ai import Sandbox

    sbx = Sandbox.create(template="base", api_key=server.key, base_url=server.base)
    try:
        _wait_evicted(server, sbx.sandbox_id)
    finally:
        sbx.kill()
    text = httpx.get(f"{server.base}/metrics", headers={"Authorization": f"Bearer {server.key}"}).text
    line = next(ln for ln in text.splitlines() if ln.startswith("sandboxd_sandbox_evictions_total "))
    assert float(line.split()[-1]) >= 1


def test_an_evicted_sandbox_stays_evicted_across_a_restart(server):
    from hopx_ai import Sandbox

    sbx = Sandbox.create(template="base", api_key=server.key, base_url=server.base)
    try:
        sbx.commands.run("echo kept > /tmp/mark")
        _wait_evicted(server, sbx.sandbox_id)
        server.stop()
        server.start()
        assert sbx.get_info().status == "running"
        assert sbx.commands.run("cat /tmp/mark").stdout.strip() == "kept"
        assert _events(server, sbx.sandbox_id, "resumed")[-1]["resume"]["evicted"] is True
    finally:
        sbx.kill()
