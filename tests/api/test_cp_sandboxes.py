"""Sandbox lifecycle through the control plane, with the HopX client's strict types."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from hopx_ai._parsers import _parse_sandbox_info_response


def parse_ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def agent(cp, sb, path, method="GET", **kw):
    headers = {"Authorization": f"Bearer {sb['auth_token']}", **kw.pop("headers", {})}
    return httpx.request(method, cp.gateway + path, headers=headers, timeout=30, **kw)


def test_create_returns_hopx_shape_and_a_healthy_agent(cp, client, sandbox):
    assert isinstance(sandbox["id"], str) and sandbox["status"] == "running"
    assert sandbox["public_host"] == cp.gateway
    assert set(sandbox["resources"]) == {"vcpu", "memory_mb", "disk_mb"}
    token_exp = parse_ts(sandbox["token_expires_at"])
    assert token_exp - datetime.now(timezone.utc) >= timedelta(hours=24)
    info = _parse_sandbox_info_response(client.get(f"/v1/sandboxes/{sandbox['id']}").json())
    assert info.sandbox_id == sandbox["id"] and info.organization_id == 1 and info.template_id == "tpl_base"
    r = agent(cp, sandbox, "/health")
    assert r.status_code == 200 and r.json()["status"] == "healthy"


def test_env_vars_and_internet_access_are_applied(cp, client):
    r = client.post("/v1/sandboxes", json={"template_name": "base", "env_vars": {"TEST_X": "42"},
                                           "internet_access": True})
    sb = r.json()
    try:
        assert sb["internet_access"] is True
        out = agent(cp, sb, "/commands/run", "POST", json={"command": "echo $TEST_X"}).json()
        assert out["stdout"].strip() == "42"
    finally:
        client.delete(f"/v1/sandboxes/{sb['id']}")


def test_state_machine_and_409s(cp, client, sandbox):
    sid = sandbox["id"]
    # pause/resume send no body but a JSON content type (contract §2.0)
    assert client.post(f"/v1/sandboxes/{sid}/pause").json()["status"] == "paused"
    # pausing a paused sandbox is a no-op (the hopx CLI's connect-then-resume relies on the same for resume)
    assert client.post(f"/v1/sandboxes/{sid}/pause").json()["status"] == "paused"
    r = agent(cp, sandbox, "/health")
    assert r.status_code == 409 and r.json()["code"] == "SANDBOX_PAUSED"
    assert client.post(f"/v1/sandboxes/{sid}/resume").json()["status"] == "running"
    assert agent(cp, sandbox, "/health").status_code == 200
    assert client.post(f"/v1/sandboxes/{sid}/resume").json()["status"] == "running"
    r = client.post(f"/v1/sandboxes/{sid}/start")
    assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_state_transition"
    assert client.post(f"/v1/sandboxes/{sid}/stop").json()["status"] == "stopped"
    assert agent(cp, sandbox, "/health").status_code == 409
    assert client.post(f"/v1/sandboxes/{sid}/pause").status_code == 409
    assert client.post(f"/v1/sandboxes/{sid}/start").json()["status"] == "running"
    assert agent(cp, sandbox, "/health").json()["status"] == "healthy"


def test_list_filters_and_cursor_paging(client):
    ids = [client.post("/v1/sandboxes", json={"template_name": "base", "region": "test-r1"}).json()["id"]
           for _ in range(3)]
    try:
        client.post(f"/v1/sandboxes/{ids[0]}/pause")
        seen, cursor = [], None
        while True:
            params = {"limit": 2, "region": "test-r1", **({"cursor": cursor} if cursor else {})}
            page = client.get("/v1/sandboxes", params=params).json()
            seen += [s["id"] for s in page["data"]]
            if not page["has_more"]:
                assert page["next_cursor"] is None
                break
            cursor = page["next_cursor"]
        assert sorted(seen) == sorted(ids) and len(seen) == 3
        paused = client.get("/v1/sandboxes", params={"status": "paused", "region": "test-r1"}).json()["data"]
        assert [s["id"] for s in paused] == [ids[0]]
        by_tpl = client.get("/v1/sandboxes", params={"template": "code-interpreter", "region": "test-r1"}).json()
        assert by_tpl["data"] == []
        assert client.get("/v1/sandboxes", params={"status": "nonsense"}).status_code == 400
        assert client.get("/v1/sandboxes", params={"cursor": "%%%"}).status_code == 400
        import base64
        import json

        naive = base64.urlsafe_b64encode(json.dumps(["2020-01-01T00:00:00", "x"]).encode()).decode()
        assert client.get("/v1/sandboxes", params={"cursor": naive}).status_code == 400
    finally:
        for sid in ids:
            client.delete(f"/v1/sandboxes/{sid}")


def test_timeout_is_enforced_within_a_second_and_can_be_moved(cp, client):
    sb = client.post("/v1/sandboxes", json={"template_name": "base", "timeout_seconds": 2}).json()
    expires = parse_ts(sb["expires_at"])
    moved = client.post("/v1/sandboxes", json={"template_name": "base", "timeout_seconds": 2}).json()
    r = client.put(f"/v1/sandboxes/{moved['id']}/timeout", json={"timeout_seconds": 30})
    assert r.status_code == 200 and r.json()["timeout_seconds"] == 30
    new_exp = parse_ts(client.get(f"/v1/sandboxes/{moved['id']}").json()["expires_at"])
    assert new_exp - datetime.now(timezone.utc) > timedelta(seconds=25)
    while client.get(f"/v1/sandboxes/{sb['id']}").status_code == 200:
        assert datetime.now(timezone.utc) < expires + timedelta(seconds=1.5), "sandbox outlived its timeout"
        time.sleep(0.1)
    assert datetime.now(timezone.utc) <= expires + timedelta(seconds=1.5)
    assert agent(cp, sb, "/health").status_code == 401
    assert client.get(f"/v1/sandboxes/{moved['id']}").status_code == 200
    client.delete(f"/v1/sandboxes/{moved['id']}")


def test_token_refresh_and_delete_revokes(cp, client, sandbox):
    sid = sandbox["id"]
    r = client.post(f"/v1/sandboxes/{sid}/token/refresh")
    body = r.json()
    assert r.status_code == 200 and body["auth_token"] and parse_ts(body["token_expires_at"])
    assert agent(cp, {"auth_token": body["auth_token"]}, "/health").status_code == 200
    r = client.delete(f"/v1/sandboxes/{sid}")
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert client.get(f"/v1/sandboxes/{sid}").status_code == 404
    assert client.delete(f"/v1/sandboxes/{sid}").status_code == 404
    r = agent(cp, sandbox, "/health")
    assert r.status_code == 401 and r.json()["code"] == "INVALID_TOKEN"
    assert client.post(f"/v1/sandboxes/{sid}/token/refresh").status_code == 404


def test_another_token_revokes_none_and_a_refresh_two_back_does(cp, client, sandbox):
    sid = sandbox["id"]
    r = client.post(f"/v1/sandboxes/{sid}/token")
    assert r.status_code == 200 and parse_ts(r.json()["token_expires_at"])
    second = {"auth_token": r.json()["auth_token"]}
    assert agent(cp, sandbox, "/health").status_code == 200 and agent(cp, second, "/health").status_code == 200
    for _ in range(2):  # two refreshes: the tokens of the first generation are gone at once, grace or not
        newest = {"auth_token": client.post(f"/v1/sandboxes/{sid}/token/refresh").json()["auth_token"]}
    for old in (sandbox, second):
        r = agent(cp, old, "/health")
        assert r.status_code == 401 and r.json()["code"] == "INVALID_TOKEN"
    third = {"auth_token": client.post(f"/v1/sandboxes/{sid}/token").json()["auth_token"]}
    assert agent(cp, newest, "/health").status_code == 200 and agent(cp, third, "/health").status_code == 200
    assert client.post("/v1/sandboxes/sb_nope/token").status_code == 404


def test_delete_frees_the_agent_process(cp, client):
    before = set(cp.agent_pids())
    sb = client.post("/v1/sandboxes", json={"template_name": "base"}).json()
    new = set(cp.agent_pids()) - before
    assert len(new) == 1
    client.delete(f"/v1/sandboxes/{sb['id']}")
    assert not (set(cp.agent_pids()) & new)
    assert not (cp.data_dir / "sandboxes" / sb["id"]).exists()


def test_official_hopx_sdk_end_to_end(cp, monkeypatch):
    from hopx_ai import Sandbox

    monkeypatch.setenv("HOPX_API_KEY", cp.key)
    sb = Sandbox.create(template="base", base_url=cp.base, env_vars={"GREETING": "hi"})
    try:
        assert sb.get_info().status == "running"
        res = sb.commands.run("echo $GREETING")
        assert res.stdout.strip() == "hi"
        sb.set_timeout(900)
        assert sb.get_info().timeout_seconds == 900
        sb.pause()
        assert sb.get_info().status == "paused"
        sb.resume()
        assert sb.commands.run("echo back").stdout.strip() == "back"
        assert sb.sandbox_id in [s.sandbox_id for s in Sandbox.list(base_url=cp.base)]
        assert {t.name for t in Sandbox.list_templates(base_url=cp.base)} >= {"base", "code-interpreter"}
        assert Sandbox.get_template("base", base_url=cp.base).is_active
    finally:
        sb.kill()
    from hopx_ai.errors import NotFoundError

    with pytest.raises(NotFoundError):
        Sandbox.connect(sb.sandbox_id, base_url=cp.base)
    assert Sandbox.health_check(base_url=cp.base)["status"] == "healthy"


def test_official_async_sdk(cp, monkeypatch):
    import asyncio

    from hopx_ai import AsyncSandbox

    monkeypatch.setenv("HOPX_API_KEY", cp.key)

    async def run():
        sb = await AsyncSandbox.create(template="base", base_url=cp.base)
        try:
            info = await sb.get_info()
            assert info.status == "running" and info.public_host == cp.gateway
            await sb.pause()
            await sb.resume()
            assert (await sb.get_info()).status == "running"
            token = await sb.get_token()
            assert token
        finally:
            await sb.kill()
        return sb.sandbox_id

    sid = asyncio.run(run())
    with cp.client() as c:
        assert c.get(f"/v1/sandboxes/{sid}").status_code == 404


def test_a_sandbox_that_dies_on_its_own_is_recorded_as_killed(cp, client):
    import os
    import signal

    before = set(cp.agent_pids())
    sb = client.post("/v1/sandboxes", json={"template_name": "base"}).json()
    (pid,) = set(cp.agent_pids()) - before
    with httpx.Client(base_url=cp.base, timeout=30) as c:
        with c.stream("GET", "/v1/sandboxes/stream", params={"token": cp.key}) as resp:
            os.killpg(pid, signal.SIGKILL)  # a crash the control plane did not ask for
            deadline = time.monotonic() + 15
            for line in resp.iter_lines():
                if line.startswith("data: ") and '"sandbox.lifecycle.killed"' in line and sb["id"] in line:
                    import json

                    assert json.loads(line[6:])["data"]["kill_reason"] == "error"
                    break
                assert time.monotonic() < deadline, "death not noticed"
    assert client.get(f"/v1/sandboxes/{sb['id']}").status_code == 404
