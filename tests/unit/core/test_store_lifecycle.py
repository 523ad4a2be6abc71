"""The store (both databases) and the lifecycle service over the fake backend, without HTTP."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from sandboxd.config import Settings
from sandboxd.core import events as ev
from sandboxd.errors import Conflict, Invalid, NotFound
from sandboxd.core.lifecycle import CreateRequest
from sandboxd.wiring import ControlPlane
from sandboxd.core.store.tables import SandboxRow


@pytest.fixture
def settings(tmp_path, db_url):
    return Settings(data_dir=tmp_path / "data", backend="fake", database_url=db_url)


def test_migrations_are_idempotent_and_named(settings):
    svc = ControlPlane.build(settings)
    ControlPlane.build(settings)  # a second start upgrades nothing and fails nothing
    with svc.store.engine.connect() as c:
        heads = {r[0] for r in c.execute(sa.text("select version_num from alembic_version"))}
    assert heads and all(h[:4].isdigit() and h[4] == "_" for h in heads)  # ours: NNNN_name
    names = set(sa.inspect(svc.store.engine).get_table_names())
    assert {"sandboxes", "templates", "builds", "api_keys", "events"} <= names
    svc.store.engine.dispose()


def test_api_keys_are_hashed(settings):
    svc = ControlPlane.build(settings)
    secret = svc.keys.bootstrap(None)
    assert secret and svc.keys.bootstrap(None) is None  # only on a fresh install
    assert svc.keys.lookup(secret).is_admin and svc.keys.lookup(secret + "x") is None
    with svc.store.engine.connect() as c:
        stored = [r[0] for r in c.execute(sa.text("select key_hash from api_keys"))]
    assert secret not in stored and len(stored[0]) == 64
    svc.store.engine.dispose()


def test_lifecycle_state_machine_events_and_recovery(settings):
    async def run():
        svc = ControlPlane.build(settings)
        await svc.start()
        q = svc.bus.subscribe()
        try:
            sb, token, _ = await svc.lifecycle.create(CreateRequest(template_name="base"))
            assert sb.status == "running" and svc.signer.verify(token).sandbox_id == sb.id
            with pytest.raises(Conflict):
                await svc.lifecycle.resume(sb.id)
            await svc.lifecycle.pause(sb.id)
            await svc.lifecycle.resume(sb.id)
            with pytest.raises(Invalid):
                await svc.lifecycle.create(CreateRequest())
            with pytest.raises(NotFound):
                await svc.lifecycle.create(CreateRequest(template_name="nope"))
            # Rows the runtime does not know, and a runtime sandbox the store does not know:
            now = datetime.now(timezone.utc)
            with svc.store.tx() as s:
                for sid, status in (("sbhalf", "creating"), ("sblost", "running")):
                    s.add(SandboxRow(id=sid, status=status, template_id="tpl_base", template_name="base",
                                     region="local", node_id="n", vcpu=1, memory_mb=512, disk_mb=1024,
                                     internet_access=False, env_vars={}, metadata_={}, timeout_seconds=60,
                                     created_at=now, started_at=now, token_version=1))
            await svc.lifecycle.recover()
            for sid in ("sbhalf", "sblost"):
                with pytest.raises(NotFound):
                    svc.lifecycle.get(sid)
            assert svc.lifecycle.get(sb.id).status == "running"  # the real one was adopted
            await svc.lifecycle.kill(sb.id)
            seen = []
            while not q.empty():
                seen.append(q.get_nowait())
            types = [e.type for e in seen if e.sandbox_id == sb.id]
            assert types == [ev.CREATED, ev.PAUSED, ev.RESUMED, ev.KILLED]
            lost = [e for e in seen if e.sandbox_id == "sblost"]
            assert lost and lost[0].data["kill_reason"] == "node_lost"
            assert [e.id for e in seen] == sorted(e.id for e in seen)
            assert svc.events.since(seen[1].id, prefix="sandbox.")[0].id == seen[2].id
            assert await svc.backend.state(sb.id) is None
        finally:
            await svc.stop()

    asyncio.run(run())


def test_template_delete_rules(settings):
    svc = ControlPlane.build(settings)
    svc.catalog.sync_builtins()
    with pytest.raises(Invalid):
        svc.catalog.delete("tpl_base", in_use=0)
    t = svc.catalog.begin_build("test-custom", "bld_1", vcpu=1, memory_mb=512, disk_gb=1, update=False)
    with pytest.raises(Conflict):
        svc.catalog.delete(t.id, in_use=0)  # still building
    svc.catalog.finish_build(t.id, language="python", error=None)
    with pytest.raises(Conflict):
        svc.catalog.begin_build("test-custom", "bld_2", vcpu=1, memory_mb=512, disk_gb=1, update=False)
    with pytest.raises(Conflict):
        svc.catalog.delete(t.id, in_use=2)
    svc.catalog.delete(t.id, in_use=0)
    with pytest.raises(NotFound):
        svc.catalog.get("test-custom")
    svc.store.engine.dispose()


def test_sandboxes_stored_before_0004_keep_public_ports(db_url):
    """Revision 0004 adds `public_traffic` to existing rows as true: E2B's default, what they had before."""
    from sandboxd.core.store import db
    from support.database import insert_running_sandbox

    engine = db.make_engine(db_url)
    db.upgrade(engine, "0003_idempotency")
    insert_running_sandbox(engine, "sbold")
    db.upgrade(engine)
    with engine.connect() as c:
        assert c.execute(sa.text("select public_traffic from sandboxes where id = 'sbold'")).scalar() in (True, 1)
    engine.dispose()
