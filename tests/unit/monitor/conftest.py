from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from sandboxd.core.eventlog import EventLog
from sandboxd.core.events import EventBus
from sandboxd.core.store import Store, make_engine, upgrade

SEED_JS = Path(__file__).with_name("seed_verify.js")


@pytest.fixture
def seed_verify():
    """The seed's own verification function (run by node) as a Python callable(secret, body, signature)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is needed to run the seed's verification function")

    def verify(secret: str, body: bytes, signature: str) -> bool:
        out = subprocess.run([node, str(SEED_JS)], input=json.dumps({"secret": secret, "payload": body.decode(), "sig": signature}),
                             capture_output=True, text=True, timeout=30, check=True)
        return out.stdout == "true"

    return verify


PG_URL = os.environ.get("SANDBOXD_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path: Path) -> Store:
    """The real store on SQLite, and on PostgreSQL when SANDBOXD_TEST_POSTGRES_URL is set (scripts/test.sh sets it)."""
    import sqlalchemy as sa

    import sandboxd.core.store.monitoring  # noqa: F401  (registers the tables)

    name = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'mon.db'}"
    else:
        if not PG_URL:
            pytest.skip("SANDBOXD_TEST_POSTGRES_URL is not set")
        admin = PG_URL.replace("postgresql://", "postgresql+psycopg://", 1) if "+psycopg" not in PG_URL else PG_URL
        name = "sbx_monitor_" + secrets.token_hex(4)
        eng = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        eng.dispose()
        url = admin.rpartition("/")[0] + "/" + name
    engine = make_engine(url)
    upgrade(engine)
    yield Store(engine)
    engine.dispose()
    if name:
        eng = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        eng.dispose()


@pytest.fixture
def eventlog(store: Store) -> EventLog:
    return EventLog(store, EventBus())
