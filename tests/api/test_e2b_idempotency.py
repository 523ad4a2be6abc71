"""E2B create's Idempotency-Key survives a control-plane restart (kept in the store), on both databases."""
from __future__ import annotations

import httpx


def create(cp, key: str, **body) -> httpx.Response:
    return httpx.post(cp.base + "/sandboxes", json={"templateID": "base", "timeout": 60, **body},
                      headers={"X-API-Key": cp.key, "Idempotency-Key": key}, timeout=60)


def test_same_key_after_restart_returns_the_same_sandbox(cp):
    first = create(cp, "j-idem-restart-1")
    assert first.status_code == 201, first.text
    sid = first.json()["sandboxID"]
    try:
        cp.stop()
        cp.start()
        again = create(cp, "j-idem-restart-1")
        assert again.status_code == 201, again.text
        assert again.json()["sandboxID"] == sid
        # The replayed token works: the sandbox is reachable with it through the gateway.
        r = httpx.get(cp.gateway + "/health", timeout=10,  # as the E2B SDK sends it (it is no Bearer token)
                      headers={"E2b-Sandbox-Id": sid, "X-Access-Token": again.json()["envdAccessToken"]})
        assert r.status_code in (200, 204)
        other = create(cp, "j-idem-restart-1", timeout=61)  # same key, another body
        assert other.status_code == 409 and "different request body" in other.json()["message"]
        with cp.client() as c:
            mine = [s for s in c.get("/v1/sandboxes", params={"limit": 100}).json()["data"] if s["id"] == sid]
            assert len(mine) == 1
            assert len(c.get("/v1/sandboxes", params={"limit": 100}).json()["data"]) == 1  # no second sandbox
    finally:
        httpx.delete(f"{cp.base}/sandboxes/{sid}", headers={"X-API-Key": cp.key}, timeout=30)


def test_failed_create_frees_the_key(cp):
    bad = create(cp, "j-idem-fail-1", templateID="no-such-template")
    assert bad.status_code == 404
    ok = create(cp, "j-idem-fail-1", templateID="no-such-template")
    assert ok.status_code == 404  # not a 409: the failed attempt did not keep the key
    fresh = create(cp, "j-idem-fail-2")
    assert fresh.status_code == 201
    httpx.delete(f"{cp.base}/sandboxes/{fresh.json()['sandboxID']}", headers={"X-API-Key": cp.key}, timeout=30)
