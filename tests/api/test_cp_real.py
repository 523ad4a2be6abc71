"""Through crun (marked real): the official SDK and the official template builder against `sandboxd serve`."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from support.server import CPServer
from support.waiting import wait_for

TEMPLATES = os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates")


@pytest.fixture(scope="module")
def real():
    # Not under pytest's 0700 tmp dir: the sandbox's mapped root (uid 100000) must traverse the data dir.
    data = Path(tempfile.mkdtemp(prefix="test-real-", dir="/tmp"))
    data.chmod(0o755)
    srv = CPServer(data, None, SANDBOXD_BACKEND="crun", SANDBOXD_TEMPLATES_PATH=TEMPLATES).start()
    yield srv
    try:
        with srv.client() as c:
            for t in c.get("/v1/templates").json()["data"]:
                if t["name"].startswith("test-real"):
                    c.delete(f"/v1/templates/{t['id']}")
    finally:
        srv.close()
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.real
def test_official_sdk_through_crun(real, monkeypatch):
    from hopx_ai import Sandbox

    monkeypatch.setenv("HOPX_API_KEY", real.key)
    sb = Sandbox.create(template="base", base_url=real.base, env_vars={"TEST_BACKEND": "crun"})
    try:
        assert sb.commands.run("echo $TEST_BACKEND").stdout.strip() == "crun"
        r = sb.run_code("print(6 * 7)")
        assert r.success and r.stdout.strip() == "42"
        sb.pause()
        assert sb.get_info().status == "paused"
        sb.resume()
        assert sb.commands.run("echo ok").stdout.strip() == "ok"
    finally:
        sb.kill()
    with real.client() as c:
        assert c.get(f"/v1/sandboxes/{sb.sandbox_id}").status_code == 404


@pytest.mark.real
@pytest.mark.slow
def test_official_template_builder_end_to_end(real, tmp_path):
    from hopx_ai.template import BuildOptions, Template

    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "hello.py").write_text("print('hello from a built template')\n")
    name = f"test-real-{int(time.time())}"
    tpl = (Template(from_image="base").copy("app", "/opt/app").set_env("TEST_BUILT", "yes")
           .run_cmd("python3 /opt/app/app/hello.py > /opt/built.txt || python3 /opt/app/hello.py > /opt/built.txt"))
    logs = []
    opts = BuildOptions(name=name, api_key=real.key, base_url=real.base, context_path=str(tmp_path),
                        cpu=1, memory=1024, disk_gb=4, on_log=lambda e: logs.append(e["message"]),
                        template_activation_timeout=600)
    result = asyncio.run(asyncio.wait_for(Template.build(tpl, opts), 900))
    assert result.template_id and result.build_id
    assert any("Step" in line for line in logs), logs
    with real.client() as c:
        t = c.get(f"/v1/templates/{name}").json()
        assert t["status"] == "active" and t["is_active"] and t["id"] == result.template_id
        sb = c.post("/v1/sandboxes", json={"template_id": result.template_id}).json()
        try:
            out = httpx.post(real.gateway + "/commands/run", headers={"Authorization": f"Bearer {sb['auth_token']}"},
                             json={"command": "cat /opt/built.txt; echo $TEST_BUILT"}, timeout=60).json()
            assert "hello from a built template" in out["stdout"] and "yes" in out["stdout"]
            r = c.delete(f"/v1/templates/{result.template_id}")
            assert r.status_code == 409 and r.json()["code"] == "template_in_use"
        finally:
            c.delete(f"/v1/sandboxes/{sb['id']}")
        store = Path(TEMPLATES)
        layers = json.loads((store / "images" / f"{name}.json").read_text())["layers"]
        base = set(json.loads((store / "images" / "base.json").read_text())["layers"])
        assert c.delete(f"/v1/templates/{result.template_id}").status_code == 200
        # Its own layers are freed with it (no separate gc run), once the killed sandbox's teardown has let go
        # of them; the base's stay.
        assert not (store / "images" / f"{name}.json").exists()
        wait_for(lambda: not [h for h in layers if h not in base and (store / "layers" / h).exists()], timeout=30,
                 what=f"the layers of {name} to be freed")
        assert all((store / "layers" / h).is_dir() for h in base)


@pytest.mark.real
@pytest.mark.slow
def test_sigkill_during_creates_then_restart_through_crun():
    import signal
    import threading

    data = Path(tempfile.mkdtemp(prefix="test-realkill-", dir="/tmp"))
    data.chmod(0o755)
    srv = CPServer(data, None, SANDBOXD_BACKEND="crun", SANDBOXD_TEMPLATES_PATH=TEMPLATES).start()
    results, lock = [], threading.Lock()

    def worker():
        try:
            r = httpx.post(srv.base + "/v1/sandboxes", json={"template_name": "base"},
                           headers={"X-API-Key": srv.key}, timeout=120)
        except httpx.HTTPError as exc:
            r = exc
        with lock:
            results.append(r)

    try:
        threads = [threading.Thread(target=worker) for _ in range(20)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with lock:
                if sum(isinstance(r, httpx.Response) and r.status_code == 201 for r in results) >= 3:
                    break
            time.sleep(0.01)
        srv.stop(signal.SIGKILL)
        for t in threads:
            t.join()
        reported = {r.json()["id"]: r.json() for r in results if isinstance(r, httpx.Response) and r.status_code == 201}
        assert reported
        srv.start()
        with srv.client() as c:
            live = c.get("/v1/sandboxes", params={"limit": 1000}).json()["data"]
        assert set(reported) <= {s["id"] for s in live} and all(s["status"] == "running" for s in live)
        for sb in live:  # every row the store keeps is a sandbox the runtime runs and the gateway reaches
            token = reported[sb["id"]]["auth_token"] if sb["id"] in reported else None
            if token is None:
                with srv.client() as c:
                    token = c.post(f"/v1/sandboxes/{sb['id']}/token/refresh").json()["auth_token"]
            r = httpx.get(srv.gateway + "/health", headers={"Authorization": f"Bearer {token}"}, timeout=15)
            assert r.status_code == 200, (sb["id"], r.text)
    finally:
        srv.close()
        shutil.rmtree(data, ignore_errors=True)
