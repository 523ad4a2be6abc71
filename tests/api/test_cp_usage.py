"""`GET /v1/usage` over HTTP: a team's key sees its own team (another team is a 404 like a missing one), the
operator every team; bad times and empty windows are 400s in the API's error body."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def teams(cp):
    """Keys of two teams' members; team A's member ran a sandbox (created, paused, resumed, killed)."""
    with cp.client() as op:
        keys = {}
        for name in ("usage-a", "usage-b"):
            assert op.post("/v1/teams", json={"name": name}).status_code == 201
            r = op.post("/v1/api-keys", json={"name": f"{name}-member", "team": name})
            assert r.status_code == 201, r.text
            keys[name] = r.json()["key"]
    with cp.client(keys["usage-a"]) as a:
        r = a.post("/v1/sandboxes", json={"template_name": "base"})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        for step in ("pause", "resume"):
            assert a.post(f"/v1/sandboxes/{sid}/{step}").status_code == 200
        assert a.delete(f"/v1/sandboxes/{sid}").status_code == 200
    return keys, sid


def _norm(r, *values: str) -> dict:
    text = r.text
    for v in values:
        text = text.replace(v, "X")
    body = json.loads(text)
    body.pop("request_id")
    body["error"].pop("request_id")
    return body


def test_a_team_sees_its_own_usage(cp, teams):
    keys, sid = teams
    with cp.client(keys["usage-a"]) as a, cp.client(keys["usage-b"]) as b, cp.client() as op:
        mine = a.get("/v1/usage")
        assert mine.status_code == 200, mine.text
        body = mine.json()
        assert body["object"] == "usage" and body["request_id"] and body["from"] < body["to"]
        [team] = body["teams"]
        assert (team["team_name"], [s["sandbox_id"] for s in team["sandboxes"]]) == ("usage-a", [sid])
        [sb] = team["sandboxes"]
        assert sb["sandbox_seconds"] > 0 and sb["template_id"]
        assert team["sandbox_seconds"] == sb["sandbox_seconds"]
        assert a.get("/v1/usage", params={"team": "usage-a"}).json()["teams"] == [team]
        # The other team: its own (empty) usage only.
        assert [(t["team_name"], t["sandboxes"]) for t in b.get("/v1/usage").json()["teams"]] == [("usage-b", [])]
        # The operator: every team, or the one asked for; the killed sandbox's numbers do not move.
        every = op.get("/v1/usage").json()["teams"]
        assert team in every
        assert op.get("/v1/usage", params={"team": team["team_id"]}).json()["teams"] == [team]
        assert op.get("/v1/usage", params={"sandbox_id": sid}).json()["teams"] == [team]


@pytest.mark.parametrize("param", ["team", "sandbox_id"])
def test_another_teams_team_or_sandbox_is_a_404_like_a_missing_one(cp, teams, param):
    keys, sid = teams
    theirs, missing = {"team": ("usage-a", "usage-nosuch"), "sandbox_id": (sid, "sb000000000000000000")}[param]
    with cp.client(keys["usage-b"]) as b:
        r = b.get("/v1/usage", params={param: theirs})
        gone = b.get("/v1/usage", params={param: missing})
    assert r.status_code == gone.status_code == 404, r.text
    assert r.json()["code"] == {"team": "team_not_found", "sandbox_id": "sandbox_not_found"}[param]
    assert _norm(r, theirs) == _norm(gone, missing)


@pytest.mark.parametrize("params,code", [
    ({"from": "last tuesday"}, "invalid_time"),
    ({"to": "2026-13-01"}, "invalid_time"),
    ({"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, "invalid_window"),
    ({"from": "2026-11-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, "invalid_window"),
    ({"to": "0001-01-02"}, "invalid_window"),
])
def test_bad_windows_are_400s(client, params, code):
    r = client.get("/v1/usage", params=params)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == body["error"]["code"] == code and body["message"]


def test_a_window_in_the_query_is_the_window_answered(client):
    r = client.get("/v1/usage", params={"from": "2026-11-01T01:00:00+01:00", "to": "2026-11-02"})
    assert r.status_code == 200, r.text
    assert (r.json()["from"], r.json()["to"]) == ("2026-11-01T00:00:00.000000Z", "2026-11-02T00:00:00.000000Z")


def test_usage_needs_a_key(cp):
    import httpx

    r = httpx.get(cp.base + "/v1/usage", trust_env=False)
    assert r.status_code == 401 and r.json()["code"] == "missing_api_key"
