"""Control-plane API fixtures: a real `sandboxd serve` on the fake backend, on SQLite and on PostgreSQL."""
from __future__ import annotations

import os

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
        pytest.skip("SANDBOXD_TEST_POSTGRES_URL is not set (scripts start PostgreSQL in CI)")
    url, name = create_database(PG_URL)
    yield url
    drop_database(PG_URL, name)


@pytest.fixture(scope="module")
def cp(database_url, tmp_path_factory):
    srv = CPServer(tmp_path_factory.mktemp("cp"), database_url).start()
    yield srv
    srv.close()


@pytest.fixture
def client(cp):
    with cp.client() as c:
        yield c


@pytest.fixture
def sandbox(client):
    r = client.post("/v1/sandboxes", json={"template_name": "base"})
    assert r.status_code == 201, r.text
    sb = r.json()
    yield sb
    client.delete(f"/v1/sandboxes/{sb['id']}")
