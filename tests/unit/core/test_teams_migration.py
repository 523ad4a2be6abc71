"""Revision 0007_teams on a database with data in it (SQLite and PostgreSQL): existing keys and rows land in
the default team; admin keys stay operators and become admins of it."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from sandboxd.core.apikeys import ApiKeyService
from sandboxd.core.store import db
from sandboxd.core.store.db import Store
from sandboxd.core.store.tables import DEFAULT_TEAM_ID
from sandboxd.core.teams import TeamService
from sandboxd.errors import Conflict, NotFound


def _old_rows(engine) -> None:
    now = {"now": datetime.now(timezone.utc)}
    with engine.begin() as c:
        c.execute(sa.text(
            "insert into api_keys (id, name, prefix, key_hash, is_admin, created_at) values"
            " ('key_op', 'admin', 'sbx_aaaa', 'h1', true, :now), ('key_m', 'laptop', 'sbx_bbbb', 'h2', false, :now)"
        ), now)
        c.execute(sa.text(
            "insert into sandboxes (id, status, template_id, template_name, region, node_id, vcpu, memory_mb,"
            " disk_mb, internet_access, env_vars, metadata, created_at, token_version, api_key_id)"
            " values ('sbold', 'running', 't', 'base', 'local', 'local', 1, 512, 1024, false, '{}', '{}',"
            " :now, 1, 'key_m')"), now)
        c.execute(sa.text(
            "insert into templates (id, name, display_name, is_public, status, vcpu, memory_mb, disk_gb, features,"
            " tags, created_at, updated_at) values ('tpl_b', 'base', 'Base', true, 'active', 1, 512, 2, '[]', '[]',"
            " :now, :now), ('tpl_c', 'mine', 'Mine', false, 'active', 1, 512, 2, '[]', '[]', :now, :now)"), now)


def test_existing_rows_go_to_the_default_team(db_url):
    engine = db.make_engine(db_url)
    db.upgrade(engine, "0006_template_tags")
    _old_rows(engine)
    db.upgrade(engine)
    with engine.connect() as c:
        keys = dict(c.execute(sa.text("select id, team_id || ':' || role from api_keys")).all())
        assert keys == {"key_op": f"{DEFAULT_TEAM_ID}:admin", "key_m": f"{DEFAULT_TEAM_ID}:member"}
        assert c.execute(sa.text("select team_id from sandboxes where id = 'sbold'")).scalar() == DEFAULT_TEAM_ID
        tpl = dict(c.execute(sa.text("select id, team_id from templates")).all())
        assert tpl == {"tpl_b": None, "tpl_c": DEFAULT_TEAM_ID}
        assert c.execute(sa.text("select name from teams")).scalars().all() == ["default"]
    engine.dispose()


def test_keys_carry_their_team_and_role(db_url):
    store = Store(db.make_engine(db_url))
    db.upgrade(store.engine)
    team = TeamService(store).create("team-a")
    keys = ApiKeyService(store)
    key, secret = keys.create("a", team_id=team.id, role="admin")
    found = keys.lookup(secret)
    assert (found.team_id, found.role, found.scope, found.team_admin) == (team.id, "admin", team.id, True)
    op, op_secret = keys.create("op", admin=True)
    assert keys.lookup(op_secret).scope is None
    assert [k.id for k in keys.list(team.id)] == [key.id]
    with pytest.raises(NotFound):
        keys.revoke(op.id, team.id)
    with pytest.raises(Conflict):
        TeamService(store).delete("team-a")  # its key is live
    keys.revoke(key.id, team.id)
    TeamService(store).delete("team-a")
    store.engine.dispose()


def test_quotas_publishing_and_webhook_teams_arrive_empty(db_url):
    """Revision 0008_team_quotas: no quota set (the operator's defaults apply), nothing published, and the
    operator's existing webhooks land in the default team."""
    engine = db.make_engine(db_url)
    db.upgrade(engine, "0007_teams")
    now = {"now": datetime.now(timezone.utc)}
    with engine.begin() as c:
        c.execute(sa.text(
            "insert into webhooks (id, name, url, enabled, events, secret, after_event_id, created_at, updated_at)"
            " values ('wh_1', 'ops', 'http://127.0.0.1:9/x', true, '[]', 's', 0, :now, :now)"), now)
        c.execute(sa.text(
            "insert into templates (id, name, display_name, is_public, status, vcpu, memory_mb, disk_gb, features,"
            " tags, created_at, updated_at, team_id) values ('tpl_c', 'mine', 'Mine', false, 'active', 1, 512, 2,"
            " '[]', '[]', :now, :now, 'team_default')"), now)
    db.upgrade(engine)
    with engine.connect() as c:
        assert c.execute(sa.text("select team_id from webhooks")).scalars().all() == [DEFAULT_TEAM_ID]
        assert c.execute(sa.text("select published from templates")).scalars().all() == [False]
        quotas = c.execute(sa.text("select max_sandboxes, max_vcpu, max_memory_mb, max_disk_mb, max_templates,"
                                   " max_creates_per_minute from teams")).all()
        assert [tuple(r) for r in quotas] == [(None,) * 6]
    engine.dispose()
