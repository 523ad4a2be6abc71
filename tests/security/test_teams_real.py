"""The team boundary on real sandboxes (crun), through the official clients, the gateway, event and metric reads,
SSE streams and webhooks: two teams and
three keys; every call on another team's sandbox is refused as if it did not exist, in both dialects, and
the same calls work for another key of the owning team (docs/teams.md, docs/threat-model.md §10)."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from support.real import TEMPLATES_DIR, require_real
from support.server import CPServer
from support.streams import replay_shows_kill

pytestmark = pytest.mark.real
SECRET = "team-a-only-7f3c"


@pytest.fixture(scope="module")
def srv():
    require_real()
    data = Path(tempfile.mkdtemp(prefix="test-teams-", dir="/tmp"))  # the mapped root must traverse it
    data.chmod(0o755)
    server = CPServer(data, None, SANDBOXD_BACKEND="crun", SANDBOXD_TEMPLATES_PATH=str(TEMPLATES_DIR),
                      SANDBOXD_WEBHOOK_ALLOW_PRIVATE="true").start()
    yield server
    server.close()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def keys(srv):
    out = {}
    with srv.client() as op:
        for team in ("real-a", "real-b"):
            assert op.post("/v1/teams", json={"name": team}).status_code == 201
        for label, team, role in (("a1", "real-a", "admin"), ("a2", "real-a", "member"), ("b", "real-b", "admin")):
            r = op.post("/v1/api-keys", json={"name": label, "team": team, "role": role})
            assert r.status_code == 201, r.text
            out[label] = r.json()["key"]
    return out


def test_hopx_sandbox_of_team_a_is_out_of_team_bs_reach(srv, keys):
    from hopx_ai import Sandbox
    from hopx_ai.errors import NotFoundError

    sb = Sandbox.create(template="base", api_key=keys["a1"], base_url=srv.base)
    mine = Sandbox.create(template="base", api_key=keys["b"], base_url=srv.base)
    try:
        sb.files.write("/workspace/secret.txt", SECRET)
        # Team B: no sandbox, no token, no command, no kill.
        with pytest.raises(NotFoundError):
            Sandbox.connect(sb.sandbox_id, api_key=keys["b"], base_url=srv.base)
        with httpx.Client(base_url=srv.base, headers={"X-API-Key": keys["b"]}) as b:
            for method, path in (("GET", ""), ("POST", "/token/refresh"), ("POST", "/pause"), ("DELETE", "")):
                assert b.request(method, f"/v1/sandboxes/{sb.sandbox_id}{path}").status_code == 404
            assert sb.sandbox_id not in [x["id"] for x in b.get("/v1/sandboxes").json()["data"]]
        # B's own sandbox token, aimed at A's sandbox through the gateway.
        token = mine.get_token()
        r = httpx.post(srv.gateway + "/commands/run", json={"command": "cat /workspace/secret.txt"},
                       headers={"Authorization": f"Bearer {token}", "X-Sandbox-Id": sb.sandbox_id}, timeout=30)
        assert r.status_code == 401 and SECRET not in r.text
        # Another key of team A: allowed.
        again = Sandbox.connect(sb.sandbox_id, api_key=keys["a2"], base_url=srv.base)
        assert again.commands.run("cat /workspace/secret.txt").stdout.strip() == SECRET
        assert sb.get_info().status == "running"
    finally:
        sb.kill()
        mine.kill()


def test_e2b_sandbox_of_team_a_is_out_of_team_bs_reach(srv, keys, monkeypatch):
    from e2b import Sandbox
    from e2b.exceptions import NotFoundException

    monkeypatch.setenv("E2B_API_URL", srv.base)
    monkeypatch.setenv("E2B_SANDBOX_URL", srv.gateway)
    sb = Sandbox.create("base", api_key=keys["a1"], timeout=120)
    mine = Sandbox.create("base", api_key=keys["b"], timeout=120)
    try:
        sb.files.write("/home/user/secret.txt", SECRET)
        with pytest.raises(NotFoundException):
            Sandbox.connect(sb.sandbox_id, api_key=keys["b"])
        assert Sandbox.kill(sb.sandbox_id, api_key=keys["b"]) is False  # the SDK's answer for a missing one
        assert sb.sandbox_id not in [x.sandbox_id for x in Sandbox.list(api_key=keys["b"]).next_items()]
        with httpx.Client(base_url=srv.base, headers={"X-API-Key": keys["b"]}) as b:
            assert b.post(f"/sandboxes/{sb.sandbox_id}/snapshots", json={}).status_code == 404
            assert b.post(f"/sandboxes/{sb.sandbox_id}/fork", json={"count": 1}).status_code == 404
        # B's envd token, aimed at A's sandbox through the gateway.
        r = httpx.get(srv.gateway + "/files", params={"path": "/home/user/secret.txt", "username": "user"},
                      headers={"E2b-Sandbox-Id": sb.sandbox_id, "X-Access-Token": mine._envd_access_token},
                      timeout=30)
        assert r.status_code == 401 and SECRET not in r.text
        again = Sandbox.connect(sb.sandbox_id, api_key=keys["a2"])
        assert again.files.read("/home/user/secret.txt") == SECRET
        assert sb.is_running()
    finally:
        sb.kill()
        mine.kill()


def _stream_mentions(srv, key: str, sid: str) -> bool:
    with httpx.Client(base_url=srv.base, headers={"X-API-Key": key}, timeout=30) as c:
        return replay_shows_kill(c, sid)


def test_events_metrics_streams_and_webhooks_stay_with_the_team(srv, keys):
    from support.receiver import Receiver

    hook = {"name": "h", "enabled": True, "signatureSecret": "s3cret-value",
            "events": ["sandbox.lifecycle.created", "sandbox.lifecycle.killed"]}
    recv_a, recv_b = Receiver(), Receiver()
    a = httpx.Client(base_url=srv.base, headers={"X-API-Key": keys["a1"]}, timeout=60)
    b = httpx.Client(base_url=srv.base, headers={"X-API-Key": keys["b"]}, timeout=60)
    try:
        assert a.post("/events/webhooks", json={**hook, "url": recv_a.url}).status_code == 201
        assert b.post("/events/webhooks", json={**hook, "url": recv_b.url}).status_code == 201
        r = a.post("/v2/sandboxes", json={"templateID": "base", "timeout": 120})
        assert r.status_code == 201, r.text
        sid = r.json()["sandboxID"]
        until = time.monotonic() + 30
        while time.monotonic() < until and not a.get(f"/sandboxes/{sid}/metrics").json():
            time.sleep(0.5)  # the sampler's first sample of a real sandbox
        assert a.get(f"/sandboxes/{sid}/metrics").json()
        for path in (f"/sandboxes/{sid}/metrics", f"/events/sandboxes/{sid}", f"/v1/sandboxes/{sid}/metrics/stream"):
            assert b.get(path).status_code == 404, path
        assert sid not in {e["sandboxId"] for e in b.get("/events/sandboxes", params={"limit": 100}).json()}
        assert a.delete(f"/sandboxes/{sid}").status_code == 204
        assert (_stream_mentions(srv, keys["a2"], sid), _stream_mentions(srv, keys["b"], sid)) == (True, False)
        until = time.monotonic() + 30
        while time.monotonic() < until and len(recv_a.payloads()) < 2:
            time.sleep(0.1)
        assert {(p["type"], p["sandboxId"]) for p in recv_a.payloads()} == {
            ("sandbox.lifecycle.created", sid), ("sandbox.lifecycle.killed", sid)}
        assert not [p for p in recv_b.payloads() if p["sandboxId"] == sid]
    finally:
        a.close()
        b.close()
        recv_a.close()
        recv_b.close()
