"""Template start command + ready check, through crun (marked real): build a template through the build
API with a start command serving HTTP and a port ready check, create from it, reach the server from inside."""
from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from support.server import CPServer

TEMPLATES = os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates")
pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def real():
    # Not under pytest's 0700 tmp dir: the sandbox's mapped root (uid 100000) must traverse the data dir.
    data = Path(tempfile.mkdtemp(prefix="test-start-", dir="/tmp"))
    data.chmod(0o755)
    srv = CPServer(data, None, SANDBOXD_BACKEND="crun", SANDBOXD_TEMPLATES_PATH=TEMPLATES).start()
    srv.made = []
    yield srv
    try:
        with srv.client() as c:
            srv.kill_all_sandboxes()
            for tid in srv.made:
                c.delete(f"/v1/templates/{tid}")
    finally:
        srv.close()
        shutil.rmtree(data, ignore_errors=True)


def build(srv, name: str, start_cmd: str, ready: dict) -> str:
    steps = [{"type": "USER", "args": ["user"]}, {"type": "WORKDIR", "args": ["/home/user/srv"]},
             {"type": "ENV", "args": ["GREETING", "hello"]}]
    with srv.client() as c:
        r = c.post("/v1/templates/build", json={
            "name": name, "from_image": "base", "steps": steps, "startCmd": start_cmd, "readyCmd": ready,
            "cpu": 1, "memory": 512, "diskGB": 2, "skipCache": False, "update": True})
        assert r.status_code == 202, r.text
        build_id, template_id = r.json()["build_id"], r.json()["template_id"]
        srv.made.append(template_id)
        doc = srv.wait_build(build_id, 300)
        assert doc["status"] in ("active", "success"), doc
    return name


def run(srv, token: str, command: str) -> dict:
    return httpx.post(srv.gateway + "/commands/run", headers={"Authorization": f"Bearer {token}"},
                      json={"command": command}, timeout=60).json()


def test_start_command_serves_http_before_create_returns(real):
    # `sleep 1` first: without the ready wait the first request below would find nothing listening.
    name = build(real, "j-start-http-" + secrets.token_hex(3),
                 "sleep 1; printf '%s from %s in %s\\n' \"$GREETING\" \"$(id -un)\" \"$(pwd)\" > index.html"
                 " && exec python3 -m http.server 8123 --bind 127.0.0.1",
                 {"type": "port", "port": 8123, "timeout": 30000})
    with real.client() as c:
        r = c.post("/v1/sandboxes", json={"template_name": name})
        assert r.status_code == 201, r.text
        sb = r.json()
        try:
            out = run(real, sb["auth_token"], "curl -sS --max-time 5 http://127.0.0.1:8123/index.html")
            assert out["stdout"].strip() == "hello from user in /home/user/srv", out
            # A normal sandbox process: owned by the template user, still there after the request ended.
            ps = run(real, sb["auth_token"], "ps -o user=,args= -u user")
            assert "http.server 8123" in ps["stdout"], ps
            # Stop ends every process; start boots the sandbox again and runs the start command again.
            assert c.post(f"/v1/sandboxes/{sb['id']}/stop").status_code == 200
            assert c.post(f"/v1/sandboxes/{sb['id']}/start").status_code == 200
            out = run(real, sb["auth_token"], "curl -sS --max-time 5 http://127.0.0.1:8123/index.html")
            assert out["stdout"].strip() == "hello from user in /home/user/srv", out
        finally:
            c.delete(f"/v1/sandboxes/{sb['id']}")


def test_ready_check_that_never_passes_fails_create_cleanly(real):
    name = build(real, "j-start-broken-" + secrets.token_hex(3), "echo broken-$((6*7)) >&2; exit 3",
                 {"type": "port", "port": 8124, "timeout": 2000})
    with real.client() as c:
        t0 = time.monotonic()
        r = c.post("/v1/sandboxes", json={"template_name": name})
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["code"] == "template_start_failed" and "broken-42" in body["message"], body
        assert "broken-42" in body["details"]["log_tail"]
        assert time.monotonic() - t0 < 30
        live = c.get("/v1/sandboxes", params={"limit": 100}).json()["data"]
        assert all(s["template_name"] != name for s in live)
    # Nothing left behind on the host either: no sandbox directory, no container.
    left = list((real.data_dir / "sandboxes").iterdir()) if (real.data_dir / "sandboxes").exists() else []
    assert left == [], left
