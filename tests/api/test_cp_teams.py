"""Teams: a key sees and touches only its own team's sandboxes, in both dialects; another team's answers 404
with the body of a missing one. Keys and teams APIs follow the roles (docs/teams.md)."""
from __future__ import annotations


import pytest

from support.bodies import without_ids
from support.streams import replay_shows_kill


@pytest.fixture(scope="module")
def keys(cp):
    with cp.client() as op:
        teams = {}
        for name in ("team-a", "team-b"):
            r = op.post("/v1/teams", json={"name": name})
            assert r.status_code == 201, r.text
            teams[name] = r.json()["id"]
        out = {"operator": cp.key}
        for name in teams:
            r = op.post("/v1/api-keys", json={"name": f"{name}-member", "team": name})
            assert r.status_code == 201, r.text
            assert r.json()["team_id"] == teams[name] and r.json()["role"] == "member"
            out[name] = r.json()["key"]
        r = op.post("/v1/api-keys", json={"name": "a-admin", "team": teams["team-a"], "role": "admin"})
        out["team-a-admin"] = r.json()["key"]
        out["teams"] = teams
    return out


@pytest.fixture
def mine(cp, keys):
    """A sandbox of team A's member, and clients for A, B and the operator."""
    a, b, op = cp.client(keys["team-a"]), cp.client(keys["team-b"]), cp.client()
    r = a.post("/v1/sandboxes", json={"template_name": "base"})
    assert r.status_code == 201, r.text
    yield r.json()["id"], a, b, op
    op.delete(f"/v1/sandboxes/{r.json()['id']}")
    for c in (a, b, op):
        c.close()


MISSING = "sb000000000000000000"


_norm = without_ids


HOPX_CALLS = [("GET", "/v1/sandboxes/{id}", None), ("POST", "/v1/sandboxes/{id}/token/refresh", None),
              ("POST", "/v1/sandboxes/{id}/pause", None), ("POST", "/v1/sandboxes/{id}/resume", None),
              ("POST", "/v1/sandboxes/{id}/stop", None), ("POST", "/v1/sandboxes/{id}/start", None),
              ("PUT", "/v1/sandboxes/{id}/timeout", {"timeout_seconds": 60}),
              ("DELETE", "/v1/sandboxes/{id}", None)]
E2B_CALLS = [("GET", "/sandboxes/{id}", None), ("POST", "/sandboxes/{id}/connect", {"timeout": 60}),
             ("POST", "/v2/sandboxes/{id}/connect", {}), ("POST", "/sandboxes/{id}/timeout", {"timeout": 60}),
             ("POST", "/sandboxes/{id}/refreshes", {"duration": 60}), ("POST", "/sandboxes/{id}/pause", {}),
             ("POST", "/sandboxes/{id}/resume", {}), ("DELETE", "/sandboxes/{id}", None)]


@pytest.mark.parametrize("method,path,body", HOPX_CALLS + E2B_CALLS)
def test_another_teams_sandbox_is_a_404_like_a_missing_one(mine, method, path, body):
    sid, a, b, op = mine
    r = b.request(method, path.replace("{id}", sid), json=body)
    assert r.status_code == 404, r.text
    missing = b.request(method, path.replace("{id}", MISSING), json=body)
    assert missing.status_code == 404 and _norm(r, sid) == _norm(missing, MISSING)
    assert a.get(f"/v1/sandboxes/{sid}").json()["status"] == "running"  # untouched


def test_owner_and_operator_may_act(mine):
    sid, a, b, op = mine
    assert a.get(f"/sandboxes/{sid}").status_code == 200
    assert a.post(f"/v1/sandboxes/{sid}/token/refresh").status_code == 200
    assert a.post(f"/sandboxes/{sid}/connect", json={"timeout": 60}).status_code in (200, 201)
    assert op.get(f"/v1/sandboxes/{sid}").status_code == 200
    assert a.put(f"/v1/sandboxes/{sid}/timeout", json={"timeout_seconds": 120}).status_code == 200
    assert a.delete(f"/v1/sandboxes/{sid}").status_code == 200


def test_lists_hold_only_the_teams_sandboxes(mine):
    sid, a, b, op = mine
    assert sid in [s["id"] for s in a.get("/v1/sandboxes").json()["data"]]
    assert sid not in [s["id"] for s in b.get("/v1/sandboxes").json()["data"]]
    assert sid in [s["sandboxID"] for s in a.get("/v2/sandboxes").json()]
    assert sid not in [s["sandboxID"] for s in b.get("/v2/sandboxes").json()]
    assert sid not in [s["sandboxID"] for s in b.get("/sandboxes").json()]
    assert sid in [s["id"] for s in op.get("/v1/sandboxes").json()["data"]]


def test_keys_api_follows_roles(cp, keys):
    teams = keys["teams"]
    with cp.client(keys["team-a"]) as member, cp.client(keys["team-a-admin"]) as admin, cp.client() as op:
        assert member.post("/v1/api-keys", json={"name": "x"}).status_code == 403
        assert member.get("/v1/api-keys").status_code == 403
        r = admin.post("/v1/api-keys", json={"name": "a2"})
        assert r.status_code == 201 and r.json()["team_id"] == teams["team-a"]
        assert admin.post("/v1/api-keys", json={"name": "x", "team": "team-b"}).status_code == 404
        assert admin.post("/v1/api-keys", json={"name": "x", "admin": True}).status_code == 403
        listed = {k["team_id"] for k in admin.get("/v1/api-keys").json()["data"]}
        assert listed == {teams["team-a"]}
        b_key = next(k for k in op.get("/v1/api-keys").json()["data"] if k["team_id"] == teams["team-b"])
        assert admin.delete(f"/v1/api-keys/{b_key['id']}").status_code == 404
        assert admin.get("/v1/teams").status_code == 403
        assert {t["name"] for t in op.get("/v1/teams").json()["data"]} >= {"default", "team-a", "team-b"}


def test_teams_api(cp):
    with cp.client() as op:
        r = op.post("/v1/teams", json={"name": "short-lived"})
        assert r.status_code == 201
        assert op.post("/v1/teams", json={"name": "short-lived"}).status_code == 409
        assert op.post("/v1/teams", json={"name": "Bad Name"}).status_code == 400
        k = op.post("/v1/api-keys", json={"name": "k", "team": "short-lived"}).json()
        assert op.delete("/v1/teams/short-lived").status_code == 409  # a live key still in it
        op.delete(f"/v1/api-keys/{k['id']}")
        assert op.delete("/v1/teams/short-lived").status_code == 200
        assert op.delete("/v1/teams/short-lived").status_code == 404
        assert op.delete("/v1/teams/default").status_code == 409


E2B_READS = ["/events/sandboxes/{id}", "/sandboxes/{id}/metrics"]


@pytest.mark.parametrize("path", E2B_READS)
def test_another_teams_events_and_metrics_are_a_404(mine, path):
    sid, a, b, op = mine
    assert a.get(path.replace("{id}", sid)).status_code == 200
    r, missing = b.get(path.replace("{id}", sid)), b.get(path.replace("{id}", MISSING))
    assert r.status_code == missing.status_code == 404 and _norm(r, sid) == _norm(missing, MISSING)


def test_team_events_and_many_metrics_hold_only_the_teams(mine, keys):
    sid, a, b, op = mine
    assert sid in {e["sandboxId"] for e in a.get("/events/sandboxes", params={"limit": 100}).json()}
    assert sid not in {e["sandboxId"] for e in b.get("/events/sandboxes", params={"limit": 100}).json()}
    assert {e["sandboxTeamId"] for e in a.get(f"/events/sandboxes/{sid}").json()} == {keys["teams"]["team-a"]}
    assert sid not in b.get("/sandboxes/metrics", params={"sandbox_ids": sid}).json()["sandboxes"]
    r = b.get(f"/v1/sandboxes/{sid}/metrics/stream")
    assert r.status_code == 404


def test_sandbox_stream_carries_only_the_teams_events(cp, keys):
    with cp.client(keys["team-a"]) as a:
        sid = a.post("/v1/sandboxes", json={"template_name": "base"}).json()["id"]
        a.delete(f"/v1/sandboxes/{sid}")
    seen = {}
    for who in ("team-a", "team-b"):
        with cp.client(keys[who]) as c:
            seen[who] = replay_shows_kill(c, sid)
    assert seen == {"team-a": True, "team-b": False}


def test_pools_are_the_operators_and_webhooks_a_team_admins(cp, keys):
    with cp.client(keys["team-a-admin"]) as admin, cp.client(keys["team-a"]) as member, cp.client() as op:
        assert admin.get("/v1/pools").status_code == 403
        assert op.get("/v1/pools").status_code == 200
        assert admin.get("/events/webhooks").status_code == 200  # the team's own (tests/api/test_cp_team_webhooks.py)
        assert member.get("/events/webhooks").status_code == 403


def test_hopx_organization_is_the_sandboxs_team(cp, mine, keys):
    sid, a, b, op = mine
    team = op.get(f"/v1/teams/{keys['teams']['team-a']}").json()
    assert isinstance(team["organization_id"], int) and team["organization_id"] != 1
    assert a.get(f"/v1/sandboxes/{sid}").json()["organization_id"] == team["organization_id"]
    r = op.post("/v1/sandboxes", json={"template_name": "base"})  # the operator's: the default team, org 1
    assert r.json()["organization_id"] == 1
    op.delete(f"/v1/sandboxes/{r.json()['id']}")
