"""Team quotas and per-sandbox resources at create (docs/teams.md): the operator sets and reads them, a team over
one is refused in both dialects with the quota, its limit and the current use, and the asked resources become
the sandbox's."""
from __future__ import annotations

import secrets

import pytest


@pytest.fixture
def team(cp):
    """A fresh team, a member key of it and clients for it and the operator; its sandboxes go afterwards."""
    name = "q-" + secrets.token_hex(4)
    with cp.client() as op:
        r = op.post("/v1/teams", json={"name": name})
        assert r.status_code == 201, r.text
        key = op.post("/v1/api-keys", json={"name": "m", "team": name}).json()
        member = cp.client(key["key"])
        yield name, member, op
        member.close()
        for sb in op.get("/v1/sandboxes", params={"limit": 1000}).json()["data"]:
            if sb["id"] in _mine:
                op.delete(f"/v1/sandboxes/{sb['id']}")
        op.delete(f"/v1/api-keys/{key['id']}")


_mine: set[str] = set()


def _create(c, **body):
    r = c.post("/v1/sandboxes", json={"template_name": "base", **body})
    if r.status_code == 201:
        _mine.add(r.json()["id"])
    return r


def _quota(op, team, **quotas):
    r = op.patch(f"/v1/teams/{team}", json=quotas)
    assert r.status_code == 200, r.text
    return r.json()


def _refused_hopx(r, quota: str, limit: int, current):
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["code"] == body["error"]["code"] == "quota_exceeded"
    assert "limit" in body["message"] and str(limit) in body["message"]
    assert body["details"] == {"quota": quota, "limit": limit, "current": current}


def _template_resources(c) -> dict:
    return c.get("/v1/templates/base").json()["default_resources"]


def test_operator_sets_reads_and_clears_quotas(team):
    name, member, op = team
    shown = op.get(f"/v1/teams/{name}").json()
    assert shown["quotas"] == {"max_sandboxes": None, "max_vcpu": None, "max_memory_mb": None, "max_disk_mb": None,
                               "max_templates": None, "max_creates_per_minute": None}
    assert shown["usage_now"] == {"sandboxes": 0, "vcpu": 0, "memory_mb": 0, "disk_mb": 0, "templates": 0, "volumes": 0}
    set_ = _quota(op, name, max_sandboxes=3, max_memory_mb=4096, max_templates=2)
    assert set_["quotas"]["max_sandboxes"] == 3 and set_["quotas"]["max_templates"] == 2
    by_id = op.get(f"/v1/teams/{set_['id']}").json()
    assert by_id["quotas"] == set_["quotas"] and by_id["name"] == name
    cleared = _quota(op, name, max_sandboxes=None)
    assert cleared["quotas"]["max_sandboxes"] is None and cleared["quotas"]["max_memory_mb"] == 4096
    assert {t["name"]: t["quotas"] for t in op.get("/v1/teams").json()["data"]}[name] == cleared["quotas"]


@pytest.mark.parametrize("body", [{"max_sandboxes": -1}, {"max_sandboxes": 1.5}, {"max_sandboxes": "3"},
                                  {"max_sandboxes": True}, {"max_vcpu": 2**31}, {"max_gpus": 1}])
def test_bad_quotas_are_a_400(team, body):
    name, member, op = team
    r = op.patch(f"/v1/teams/{name}", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "invalid_request"


def test_only_the_operator_manages_quotas_and_a_key_reads_its_own(cp, team):
    name, member, op = team
    admin_key = op.post("/v1/api-keys", json={"name": "a", "team": name, "role": "admin"}).json()
    with cp.client(admin_key["key"]) as admin:
        for c in (member, admin):
            assert c.patch(f"/v1/teams/{name}", json={"max_sandboxes": 100}).status_code == 403
            assert c.get(f"/v1/teams/{name}").status_code == 403
    op.delete(f"/v1/api-keys/{admin_key['id']}")
    assert op.get("/v1/teams/no-such-team").status_code == 404
    assert op.patch("/v1/teams/no-such-team", json={"max_sandboxes": 1}).status_code == 404
    _quota(op, name, max_sandboxes=5)
    sb = _create(member).json()
    own = member.get("/v1/team").json()
    res = sb["resources"]
    assert own["name"] == name and own["quotas"]["max_sandboxes"] == 5
    assert own["usage_now"]["sandboxes"] == 1 and own["usage_now"]["memory_mb"] == res["memory_mb"]
    assert own["usage_now"]["disk_mb"] == res["disk_mb"]
    assert op.get("/v1/team").json()["id"] == "team_default"


def test_a_team_admin_limits_its_team_within_the_operators_quota(cp, team):
    name, member, op = team
    _quota(op, name, max_sandboxes=3)
    admin_key = op.post("/v1/api-keys", json={"name": "a", "team": name, "role": "admin"}).json()
    try:
        with cp.client(admin_key["key"]) as admin:
            assert member.patch("/v1/team", json={"max_sandboxes": 1}).status_code == 403  # admins only
            r = admin.patch("/v1/team", json={"max_sandboxes": 4})
            assert r.status_code == 400 and r.json()["code"] == "over_operator_quota", r.text
            shown = admin.patch("/v1/team", json={"max_sandboxes": 1, "max_vcpu": 50}).json()
            assert shown["quotas"]["max_sandboxes"] == 1 and shown["operator_quotas"]["max_sandboxes"] == 3
            assert shown["team_quotas"]["max_sandboxes"] == 1 and shown["quotas"]["max_vcpu"] == 50
            assert _create(member).status_code == 201
            _refused_hopx(_create(member), "max_sandboxes", 1, 1)
            _quota(op, name, max_vcpu=10)  # the operator lowers its own below the team's: the lower holds
            assert op.get(f"/v1/teams/{name}").json()["quotas"]["max_vcpu"] == 10
            assert admin.patch("/v1/team", json={"max_sandboxes": None}).json()["quotas"]["max_sandboxes"] == 3
            assert _create(member).status_code == 201
    finally:
        op.delete(f"/v1/api-keys/{admin_key['id']}")


def test_concurrent_sandboxes_quota_in_both_dialects(team):
    name, member, op = team
    _quota(op, name, max_sandboxes=1)
    first = _create(member)
    assert first.status_code == 201, first.text
    _refused_hopx(_create(member), "max_sandboxes", 1, 1)
    r = member.post("/sandboxes", json={"templateID": "base"})
    assert r.status_code == 429, r.text
    assert r.headers["should-retry"] == "false"
    assert r.json()["error_code"] == "quota_exceeded" and "limit of 1 concurrent sandboxes" in r.json()["message"]
    assert member.post("/v2/sandboxes", json={"templateID": "base"}).status_code == 429
    member.delete(f"/v1/sandboxes/{first.json()['id']}")
    assert _create(member).status_code == 201  # room again
    assert member.get("/v1/team").json()["usage_now"]["sandboxes"] == 1


def test_memory_vcpu_and_disk_quotas_count_the_new_sandbox(team):
    name, member, op = team
    res = _template_resources(member)
    mem, disk, vcpu = res["memory_mb"], res["disk_gb"] * 1024, res["vcpu"]
    _quota(op, name, max_memory_mb=mem + 256)
    assert _create(member).status_code == 201
    _refused_hopx(_create(member), "max_memory_mb", mem + 256, mem)
    assert _create(member, memory_mb=256).status_code == 201  # exactly at the limit
    _quota(op, name, max_memory_mb=None, max_disk_mb=2 * disk)
    _refused_hopx(_create(member, disk_mb=disk + 1), "max_disk_mb", 2 * disk, 2 * disk)
    _quota(op, name, max_disk_mb=None, max_vcpu=2 * vcpu + 1)
    _refused_hopx(_create(member, vcpu=2), "max_vcpu", 2 * vcpu + 1, 2 * vcpu)
    assert _create(member, vcpu=1).status_code == 201


def test_creates_per_minute_count_ended_sandboxes_too(team):
    name, member, op = team
    _quota(op, name, max_creates_per_minute=2)
    for _ in range(2):
        sid = _create(member).json()["id"]
        member.delete(f"/v1/sandboxes/{sid}")
    _refused_hopx(_create(member), "max_creates_per_minute", 2, 2)
    _quota(op, name, max_creates_per_minute=3)
    assert _create(member).status_code == 201


def test_a_stopped_sandbox_holds_no_memory_but_starting_it_is_checked(team):
    name, member, op = team
    mem = _template_resources(member)["memory_mb"]
    _quota(op, name, max_memory_mb=mem, max_sandboxes=2)
    a = _create(member).json()["id"]
    assert member.post(f"/v1/sandboxes/{a}/stop").status_code == 200
    assert member.get("/v1/team").json()["usage_now"]["memory_mb"] == 0
    b = _create(member).json()["id"]  # fits: the stopped one holds no memory
    r = member.post(f"/v1/sandboxes/{a}/start")
    _refused_hopx(r, "max_memory_mb", mem, mem)
    assert member.get(f"/v1/sandboxes/{a}").json()["status"] == "stopped"
    _refused_hopx(_create(member), "max_sandboxes", 2, 2)  # the stopped one still counts as a sandbox
    assert member.post(f"/v1/sandboxes/{b}/pause").status_code == 200  # a paused one keeps its memory
    assert member.post(f"/v1/sandboxes/{a}/start").status_code == 403
    member.delete(f"/v1/sandboxes/{b}")
    assert member.post(f"/v1/sandboxes/{a}/start").json()["status"] == "running"


def test_another_teams_use_does_not_count(cp, team):
    name, member, op = team
    _quota(op, name, max_sandboxes=1)
    assert _create(op).status_code == 201  # the operator's, in the default team
    assert _create(member).status_code == 201


def test_resources_at_create_become_the_sandboxes(team):
    name, member, op = team
    r = _create(member, vcpu=1, memory_mb=384, disk_mb=2048)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert r.json()["resources"] == {"vcpu": 1, "memory_mb": 384, "disk_mb": 2048}
    assert member.get(f"/v1/sandboxes/{sid}").json()["resources"] == {"vcpu": 1, "memory_mb": 384, "disk_mb": 2048}
    nested = _create(member, resources={"memory_mb": 320})
    assert nested.status_code == 201, nested.text
    res = _template_resources(member)
    assert nested.json()["resources"] == {"vcpu": res["vcpu"], "memory_mb": 320, "disk_mb": res["disk_gb"] * 1024}
    assert _create(member, memory_mb=320, resources={"memory_mb": 320}).status_code == 201  # the same, twice


@pytest.mark.parametrize("body,field", [
    ({"memory_mb": 10**9}, "memory_mb"), ({"vcpu": 1000}, "vcpu"), ({"disk_mb": 2**31 - 1}, "disk_mb"),
    ({"resources": {"memory_mb": 10**9}}, "memory_mb"),
])
def test_resources_over_the_operators_maxima_are_a_400_naming_the_field(team, body, field):
    name, member, op = team
    r = _create(member, **body)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "resource_limit_exceeded" and r.json()["details"]["field"] == field
    assert r.json()["message"].startswith(field)


@pytest.mark.parametrize("body", [{"memory_mb": 64}, {"vcpu": 0}, {"vcpu": "2"}, {"disk_mb": 1.5},
                                  {"resources": {"memory": 512}}, {"memory_mb": 512, "resources": {"memory_mb": 640}}])
def test_malformed_resources_are_a_400(team, body):
    name, member, op = team
    r = _create(member, **body)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "invalid_request"


def test_official_clients_see_their_own_limit_errors(cp, team, monkeypatch):
    from e2b import RateLimitException, Sandbox as E2BSandbox
    from e2b import retry as e2b_retry
    from hopx_ai import Sandbox
    from hopx_ai.errors import ResourceLimitError

    name, member, op = team
    _quota(op, name, max_sandboxes=0)
    key = member.headers["x-api-key"]
    monkeypatch.setenv("HOPX_API_KEY", key)
    with pytest.raises(ResourceLimitError) as hopx_err:
        Sandbox.create(template="base", base_url=cp.base)
    assert hopx_err.value.limit == 0 and hopx_err.value.current == 0
    delays = []
    real_delay = e2b_retry._retry_delay

    def delay(*args):  # the SDK asks this before every retry: a delay means it would retry
        delays.append(real_delay(*args))
        return delays[-1]

    monkeypatch.setattr(e2b_retry, "_retry_delay", delay)
    for k, v in {"E2B_API_KEY": key, "E2B_API_URL": cp.base, "E2B_SANDBOX_URL": cp.gateway}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(RateLimitException, match="limit of 0 concurrent sandboxes"):
        E2BSandbox.create("base")
    assert delays == [None]
