"""The team boundary on real sandboxes (crun), through the official clients and the gateway: two teams and
three keys; every call on another team's sandbox is refused as if it did not exist, in both dialects, and
the same calls work for another key of the owning team (docs/teams.md, docs/threat-model.md §10)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from support.real import TEMPLATES_DIR, require_real
from support.server import CPServer

pytestmark = pytest.mark.real
SECRET = "team-a-only-7f3c"


@pytest.fixture(scope="module")
def srv():
    require_real()
    data = Path(tempfile.mkdtemp(prefix="test-teams-", dir="/tmp"))  # the mapped root must traverse it
    data.chmod(0o755)
    server = CPServer(data, None, SANDBOXD_BACKEND="crun", SANDBOXD_TEMPLATES_PATH=str(TEMPLATES_DIR)).start()
    yield server
    server.close()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def keys(srv):
    out = {}
    with srv.client() as op:
        for team in ("real-a", "real-b"):
            assert op.post("/v1/teams", json={"name": team}).status_code == 201
        for label, team in (("a1", "real-a"), ("a2", "real-a"), ("b", "real-b")):
            r = op.post("/v1/api-keys", json={"name": label, "team": team})
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
