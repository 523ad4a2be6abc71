"""Sandbox tokens through a real `sandboxd serve` (fake backend): each works only where its dialect uses it,
a refresh ends the previous HopX token, E2B's envd token has a finite life, and API keys travel in the URL
only to event streams. On SQLite and PostgreSQL (the refresh generation lives in the sandbox's row)."""
from __future__ import annotations

import os
import time

import httpx
import jwt
import pytest


from support.database import create_database, drop_database
from support.server import CPServer

PG_URL = os.environ.get("SANDBOXD_TEST_POSTGRES_URL")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_url(request):
    if request.param == "sqlite":
        yield None
        return
    if not PG_URL:
        pytest.skip("SANDBOXD_TEST_POSTGRES_URL is not set (scripts/test.sh starts PostgreSQL)")
    url, name = create_database(PG_URL)
    yield url
    drop_database(PG_URL, name)


@pytest.fixture(scope="module")
def cp(database_url, tmp_path_factory):
    # No grace: a refreshed-away token is refused at once (the grace itself is tested below).
    srv = CPServer(tmp_path_factory.mktemp("cp"), database_url, SANDBOXD_TOKEN_REFRESH_GRACE_SECONDS="0").start()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def api(cp):
    with cp.client() as c:
        yield c


def hopx_sandbox(api) -> dict:
    r = api.post("/v1/sandboxes", json={"template_name": "base"})
    assert r.status_code in (200, 201), r.text
    return r.json()


def e2b_sandbox(api) -> dict:
    r = api.post("/sandboxes", json={"templateID": "base", "timeout": 120})
    assert r.status_code in (200, 201), r.text
    return r.json()


def through_gateway(cp, headers: dict) -> httpx.Response:
    return httpx.get(cp.gateway + "/health", headers=headers, timeout=30)


def envd(cp, sid: str, token: str) -> httpx.Response:
    return through_gateway(cp, {"E2b-Sandbox-Id": sid, "X-Access-Token": token})


def test_refresh_ends_the_previous_token(cp, api):
    sb = hopx_sandbox(api)
    old = sb["auth_token"]
    assert through_gateway(cp, {"Authorization": f"Bearer {old}"}).status_code == 200
    r = api.post(f"/v1/sandboxes/{sb['id']}/token/refresh")
    assert r.status_code == 200
    new = r.json()["auth_token"]
    assert through_gateway(cp, {"Authorization": f"Bearer {new}"}).status_code == 200
    refused = through_gateway(cp, {"Authorization": f"Bearer {old}"})
    assert refused.status_code == 401 and refused.json()["code"] == "INVALID_TOKEN"
    api.delete(f"/v1/sandboxes/{sb['id']}")


def test_the_previous_token_works_for_the_grace_only(tmp_path):
    srv = CPServer(tmp_path, None, SANDBOXD_TOKEN_REFRESH_GRACE_SECONDS="3600").start()
    try:
        with srv.client() as api:
            sb = hopx_sandbox(api)
            first = sb["auth_token"]
            second = api.post(f"/v1/sandboxes/{sb['id']}/token/refresh").json()["auth_token"]
            assert through_gateway(srv, {"Authorization": f"Bearer {first}"}).status_code == 200  # in its grace
            third = api.post(f"/v1/sandboxes/{sb['id']}/token/refresh").json()["auth_token"]
            assert through_gateway(srv, {"Authorization": f"Bearer {first}"}).status_code == 401  # two back
            for token in (second, third):
                assert through_gateway(srv, {"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        srv.close()


def test_envd_token_is_no_bearer_token_and_hopx_token_no_access_token(cp, api):
    e2b = e2b_sandbox(api)
    hopx = hopx_sandbox(api)
    assert envd(cp, e2b["sandboxID"], e2b["envdAccessToken"]).status_code < 400
    r = through_gateway(cp, {"Authorization": f"Bearer {e2b['envdAccessToken']}"})
    assert r.status_code == 401, r.text
    r = envd(cp, hopx["id"], hopx["auth_token"])
    assert r.status_code == 401, r.text
    r = through_gateway(cp, {"E2b-Sandbox-Id": hopx["id"], "E2B-Traffic-Access-Token": hopx["auth_token"],
                             "E2b-Sandbox-Port": "49999"})
    assert r.status_code == 401, r.text
    api.delete(f"/sandboxes/{e2b['sandboxID']}")
    api.delete(f"/v1/sandboxes/{hopx['id']}")


def test_envd_token_ends_with_its_sandbox(cp, api):
    e2b = e2b_sandbox(api)
    claims = jwt.decode(e2b["envdAccessToken"], options={"verify_signature": False})
    assert claims["aud"] == "e2b"
    assert claims["exp"] <= time.time() + 30 * 24 * 3600 + 60  # not 2100
    assert api.delete(f"/sandboxes/{e2b['sandboxID']}").status_code in (200, 204)
    assert envd(cp, e2b["sandboxID"], e2b["envdAccessToken"]).status_code >= 400  # a kill revokes it


def test_tokens_of_one_sandbox_never_open_another(cp, api):
    a, b = e2b_sandbox(api), e2b_sandbox(api)
    assert envd(cp, b["sandboxID"], a["envdAccessToken"]).status_code == 401
    ha, hb = hopx_sandbox(api), hopx_sandbox(api)
    r = through_gateway(cp, {"Authorization": f"Bearer {ha['auth_token']}", "X-Sandbox-Id": hb["id"]})
    assert r.status_code == 401
    for sb in (a, b):
        api.delete(f"/sandboxes/{sb['sandboxID']}")
    for sb in (ha, hb):
        api.delete(f"/v1/sandboxes/{sb['id']}")


def test_api_key_in_the_url_only_on_event_streams(cp):
    with httpx.Client(base_url=cp.base, timeout=30) as c:
        for method, path in (("GET", "/v1/sandboxes"), ("GET", "/v1/templates"), ("POST", "/v1/sandboxes"),
                             ("GET", "/sandboxes"), ("GET", "/events/sandboxes")):
            r = c.request(method, path, params={"token": cp.key}, json={"template_name": "base"})
            assert r.status_code == 401, (path, r.text)
        r = c.get("/v1/sandboxes", params={"token": cp.key})
        assert r.json()["code"] == "token_in_query_not_allowed"
        assert c.get("/v1/sandboxes", headers={"X-API-Key": cp.key}).status_code == 200
        with c.stream("GET", "/v1/sandboxes/stream", params={"token": cp.key}) as s:  # EventSource cannot set headers
            assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
        with c.stream("GET", "/v1/templates/stream", params={"token": "not-a-key"}) as s:
            assert s.status_code == 401
