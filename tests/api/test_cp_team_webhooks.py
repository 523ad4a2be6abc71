"""Webhooks belong to a team and hear only its sandboxes; lifecycle events name the key and team that caused
them (docs/teams.md)."""
from __future__ import annotations

import time

import pytest

from sandboxd.core import events as ev
from support.server import CPServer


@pytest.fixture(scope="module")
def srv(database_url, tmp_path_factory):
    server = CPServer(tmp_path_factory.mktemp("cp-wh"), database_url,
                      SANDBOXD_WEBHOOK_ALLOW_PRIVATE="true").start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def keys(srv):
    """Per team: an admin and a member key (their ids too), and the team's id."""
    out: dict = {}
    with srv.client() as op:
        for team in ("wh-a", "wh-b"):
            tid = op.post("/v1/teams", json={"name": team}).json()["id"]
            for role in ("admin", "member"):
                r = op.post("/v1/api-keys", json={"name": f"{team}-{role}", "team": team, "role": role})
                assert r.status_code == 201, r.text
                out[f"{team}-{role}"] = (r.json()["key"], r.json()["id"])
            out[team] = tid
    return out


def _hook(url: str) -> dict:
    return {"name": "lifecycle", "url": url, "enabled": True, "events": [ev.CREATED, ev.KILLED],
            "signatureSecret": "s3cret-value"}


def _wait(receiver, count: int, until: float) -> list[dict]:
    while time.monotonic() < until and len(receiver.payloads()) < count:
        time.sleep(0.05)
    return receiver.payloads()


def test_team_webhooks_are_private_and_hear_only_their_team(srv, keys):
    from support.receiver import Receiver

    recv_a, recv_b, recv_op = Receiver(), Receiver(), Receiver()
    a_admin, a_member = srv.client(keys["wh-a-admin"][0]), srv.client(keys["wh-a-member"][0])
    b_admin, b_member, op = srv.client(keys["wh-b-admin"][0]), srv.client(keys["wh-b-member"][0]), srv.client()
    try:
        assert a_member.post("/events/webhooks", json=_hook(recv_a.url)).status_code == 403  # admins manage them
        hook_a = a_admin.post("/events/webhooks", json=_hook(recv_a.url)).json()
        hook_b = b_admin.post("/events/webhooks", json=_hook(recv_b.url)).json()
        hook_op = op.post("/events/webhooks", json=_hook(recv_op.url)).json()
        assert (hook_a["teamId"], hook_b["teamId"]) == (keys["wh-a"], keys["wh-b"])
        assert [h["id"] for h in a_admin.get("/events/webhooks").json()] == [hook_a["id"]]
        assert {hook_a["id"], hook_b["id"], hook_op["id"]} <= {h["id"] for h in op.get("/events/webhooks").json()}
        for method, path, body in (("GET", "/events/webhooks/{}", None), ("PATCH", "/events/webhooks/{}", {"enabled": False}),
                                   ("GET", "/events/webhooks/{}/deliveries", None), ("DELETE", "/events/webhooks/{}", None)):
            theirs = b_admin.request(method, path.format(hook_a["id"]), json=body)
            missing = b_admin.request(method, path.format("00000000-0000-0000-0000-000000000000"), json=body)
            assert theirs.status_code == missing.status_code == 404, theirs.text
        assert a_admin.get(f"/events/webhooks/{hook_a['id']}").json()["enabled"] is True  # untouched

        made = {}
        for team, client in (("wh-a", a_member), ("wh-b", b_member)):
            r = client.post("/v1/sandboxes", json={"template_name": "base"})
            assert r.status_code == 201, r.text
            made[team] = r.json()["id"]
            assert client.delete(f"/v1/sandboxes/{made[team]}").status_code == 200
        until = time.monotonic() + 30
        got_a, got_b = _wait(recv_a, 2, until), _wait(recv_b, 2, until)
        assert {(p["type"], p["sandboxId"]) for p in got_a} == {(ev.CREATED, made["wh-a"]), (ev.KILLED, made["wh-a"])}
        assert {(p["type"], p["sandboxId"]) for p in got_b} == {(ev.CREATED, made["wh-b"]), (ev.KILLED, made["wh-b"])}
        assert all(p["sandboxTeamId"] == keys["wh-a"] for p in got_a)
        # Who did it: the member key of the sandbox's team, on both the create and the kill.
        actor = {"key_id": keys["wh-a-member"][1], "team_id": keys["wh-a"]}
        assert [p["eventData"]["actor"] for p in got_a] == [actor, actor]
        assert not [p for p in recv_op.payloads() if p["sandboxId"] in made.values()]  # the default team's hook
    finally:
        for c in (a_admin, a_member, b_admin, b_member, op):
            c.close()
        for r in (recv_a, recv_b, recv_op):
            r.close()


def test_the_events_api_carries_the_actor_and_a_timeout_has_none(srv, keys):
    with srv.client(keys["wh-b-member"][0]) as b:
        r = b.post("/v1/sandboxes", json={"template_name": "base", "timeout_seconds": 1})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        until, kinds = time.monotonic() + 30, {}
        while time.monotonic() < until and ev.KILLED not in kinds:
            kinds = {e["type"]: e for e in b.get(f"/events/sandboxes/{sid}", params={"limit": 100}).json()}
            time.sleep(0.2)
        assert kinds[ev.CREATED]["eventData"]["actor"] == {"key_id": keys["wh-b-member"][1], "team_id": keys["wh-b"]}
        assert "actor" not in kinds[ev.KILLED]["eventData"]  # the timeout killed it, not a caller
