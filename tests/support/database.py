"""Throwaway PostgreSQL databases for tests that run the control plane on PostgreSQL."""
from __future__ import annotations

import secrets

import sqlalchemy as sa


def _admin_engine(admin_url: str) -> sa.Engine:
    url = admin_url if "+psycopg" in admin_url else admin_url.replace("postgresql://", "postgresql+psycopg://", 1)
    return sa.create_engine(url, isolation_level="AUTOCOMMIT")


def create_database(admin_url: str) -> tuple[str, str]:
    """A fresh database for one test module; returns (url, name)."""
    name = "sbx_test_" + secrets.token_hex(4)
    eng = _admin_engine(admin_url)
    with eng.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = eng.url.render_as_string(hide_password=False).rpartition("/")[0]
    eng.dispose()
    return f"{base}/{name}", name


def drop_database(admin_url: str, name: str) -> None:
    eng = _admin_engine(admin_url)
    with eng.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    eng.dispose()


def insert_running_sandbox(engine: sa.Engine, sandbox_id: str) -> None:
    """A running sandbox row with only the columns every revision has: for tests of later revisions' defaults."""
    from datetime import datetime, timezone

    with engine.begin() as c:
        c.execute(sa.text(
            "insert into sandboxes (id, status, template_id, template_name, region, node_id, vcpu, memory_mb,"
            " disk_mb, internet_access, env_vars, metadata, created_at, token_version)"
            " values (:id, 'running', 't', 'base', 'local', 'local', 1, 512, 1024, false, '{}', '{}',"
            " :now, 1)"), {"id": sandbox_id, "now": datetime.now(timezone.utc)})
