"""Webhook management over HTTP (E2B's /events/webhooks), against the real control plane."""
from __future__ import annotations

import httpx

from monitoring_server import Server, make_settings

from sandboxd.core import events as ev

HOOK = {"name": "My Sandbox Webhook", "url": "http://127.0.0.1:9/webhook", "enabled": True,
        "events": [ev.CREATED, ev.UPDATED, ev.KILLED], "signatureSecret": "secret-for-event-signature-verification"}
DETAIL_KEYS = {"id", "teamId", "name", "createdAt", "url", "enabled", "events"}


def test_crud_round_trip_never_returns_the_secret(server):
    c = server.client
    r = c.post("/events/webhooks", json=HOOK)
    assert r.status_code == 201, r.text
    w = r.json()
    assert DETAIL_KEYS <= set(w) and "signatureSecret" not in r.text and HOOK["signatureSecret"] not in r.text
    assert w["events"] == HOOK["events"] and w["enabled"] is True
    assert w["id"] in [x["id"] for x in c.get("/events/webhooks").json()]
    assert c.get(f"/events/webhooks/{w['id']}").json() == w
    r = c.patch(f"/events/webhooks/{w['id']}", json={"url": "http://127.0.0.1:10/new", "enabled": False, "events": [ev.CREATED]})
    assert r.status_code == 200
    assert r.json()["url"] == "http://127.0.0.1:10/new" and r.json()["enabled"] is False and r.json()["events"] == [ev.CREATED]
    assert r.json()["name"] == HOOK["name"]  # fields not sent are kept
    r = c.patch(f"/events/webhooks/{w['id']}", json={"signatureSecret": "rotated"})  # the dashboard's rotation
    assert r.status_code == 200 and "rotated" not in r.text
    assert c.get(f"/events/webhooks/{w['id']}/deliveries").json() == []
    assert c.delete(f"/events/webhooks/{w['id']}").status_code == 200
    r = c.get(f"/events/webhooks/{w['id']}")
    assert r.status_code == 404 and r.json() == {"code": 404, "message": r.json()["message"], "error_code": "not_found"}
    assert c.delete(f"/events/webhooks/{w['id']}").status_code == 404


def test_bad_requests_are_400(server):
    c = server.client
    for body in ({**HOOK, "events": ["sandbox.lifecycle.nope"]}, {**HOOK, "url": "gopher://x"}, {"name": "x"},
                 {**HOOK, "enabled": "true"}, {**HOOK, "name": ""}):
        r = c.post("/events/webhooks", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["code"] == 400 and r.json()["error_code"] == "invalid_request" and r.headers["x-request-id"]
    r = c.post("/events/webhooks", content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_requires_an_api_key(server):
    r = httpx.get(server.url + "/events/webhooks")
    assert r.status_code == 401 and r.json()["code"] == 401
    r = httpx.get(server.url + "/events/sandboxes", headers={"X-API-Key": "wrong-key-wrong"})
    assert r.status_code == 401


def test_private_targets_refused_by_default(tmp_path):
    with Server(make_settings(tmp_path, webhook_allow_private=False)) as srv:
        r = srv.client.post("/events/webhooks", json=HOOK)
        assert r.status_code == 400 and "private" in r.json()["message"]
        r = srv.client.post("/events/webhooks", json={**HOOK, "url": "https://8.8.8.8/hook"})
        assert r.status_code == 201
