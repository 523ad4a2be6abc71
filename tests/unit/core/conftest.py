from __future__ import annotations

import os

import pytest

from support.database import create_database, drop_database

PG_URL = os.environ.get("SANDBOXD_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    if not PG_URL:
        pytest.skip("SANDBOXD_TEST_POSTGRES_URL is not set")
    url, name = create_database(PG_URL)
    yield url
    drop_database(PG_URL, name)
