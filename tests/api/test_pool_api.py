"""Warm pools through the API on the fake backend (real agents as processes): fill, claim, refill, metrics,
fallback to a cold start, resizing, and adoption of the frozen members after a restart."""
from __future__ import annotations

import json

import httpx
import pytest

from support.server import CPServer
from support.waiting import wait_for




def pool_row(c: httpx.Client, template: str = "base") -> dict:
    r = c.get(f"/v1/pools/{template}")
    assert r.status_code == 200, r.text
    return r.json()


def members(data_dir) -> set[str]:
    return {m["id"] for m in json.loads((data_dir / "pool.json").read_text())["members"]}


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    srv = CPServer(tmp_path_factory.mktemp("pool"), None, SANDBOXD_POOL="base=2").start()
    yield srv
    srv.close()


def test_pool_fills_claims_and_refills(pooled):
    with pooled.client() as c:
        wait_for(lambda: pool_row(c)["ready"] == 2)
        before = members(pooled.data_dir)
        r = c.post("/v1/sandboxes", json={"template_name": "base", "env_vars": {"POOL_T": "fresh-1"}})
        assert r.status_code == 201, r.text
        sb = r.json()
        try:
            # The member's never-shown id is the sandbox's id: container, hostname, events agree.
            assert sb["id"] in before and sb["id"] not in members(pooled.data_dir)
            row = pool_row(c)
            assert row["hits"] == 1 and row["misses"] == 0
            auth = {"Authorization": f"Bearer {sb['auth_token']}"}
            with httpx.Client(base_url=pooled.gateway, timeout=30) as g:
                out = g.post("/commands/run", headers=auth,
                             json={"command": "echo $POOL_T $SANDBOXD_SANDBOX_ID"}).json()
                assert out["stdout"].split() == ["fresh-1", sb["id"]]
            assert c.get(f"/v1/sandboxes/{sb['id']}").json()["status"] == "running"
            row = wait_for(lambda: (r := pool_row(c))["ready"] == 2 and r["last_refill_lag_seconds"] is not None and r)
            assert row["last_refill_lag_seconds"] > 0
            events = c.get(f"/events/sandboxes/{sb['id']}").json()
            assert [e["type"] for e in events if e["sandboxId"] != sb["id"]] == []
            assert any(e["type"].endswith("created") for e in events), events
        finally:
            c.delete(f"/v1/sandboxes/{sb['id']}")


def test_prometheus_exports_the_pool(pooled):
    with pooled.client() as c:
        text = c.get("/metrics").text
    assert 'sandboxd_pool_target{template="base"} 2' in text
    assert 'sandboxd_pool_hits_total{template="base"}' in text
    assert "sandboxd_pool_refill_lag_seconds" in text


def test_internet_access_is_a_miss_and_a_cold_start(pooled):
    with pooled.client() as c:
        wait_for(lambda: pool_row(c)["ready"] == 2)
        before = members(pooled.data_dir)
        misses = pool_row(c)["misses"]
        r = c.post("/v1/sandboxes", json={"template_name": "base", "internet_access": True})
        assert r.status_code == 201, r.text
        try:
            assert r.json()["id"] not in before
            assert pool_row(c)["misses"] == misses + 1
        finally:
            c.delete(f"/v1/sandboxes/{r.json()['id']}")


def test_empty_pool_falls_back_to_cold_start(pooled):
    with pooled.client() as c:
        assert c.put("/v1/pools/base", json={"size": 0}).json()["target"] == 0
        wait_for(lambda: pool_row(c)["ready"] == 0)
        r = c.post("/v1/sandboxes", json={"template_name": "base"})
        assert r.status_code == 201, r.text
        c.delete(f"/v1/sandboxes/{r.json()['id']}")
        assert c.put("/v1/pools/base", json={"size": 2}).status_code == 200
        wait_for(lambda: pool_row(c)["ready"] == 2)
        assert c.put("/v1/pools/base", json={"size": -1}).status_code in (400, 422)
        assert c.get("/v1/pools/nope").status_code == 404


def test_restart_adopts_the_frozen_members(pooled):
    with pooled.client() as c:
        wait_for(lambda: pool_row(c)["ready"] == 2)
    before = members(pooled.data_dir)
    pooled.stop()
    pooled.start()
    with pooled.client() as c:
        row = wait_for(lambda: (r := pool_row(c))["ready"] == 2 and r)
        assert members(pooled.data_dir) == before and row["filling"] == 0
        r = c.post("/v1/sandboxes", json={"template_name": "base"})
        assert r.status_code == 201 and r.json()["id"] in before
        c.delete(f"/v1/sandboxes/{r.json()['id']}")
