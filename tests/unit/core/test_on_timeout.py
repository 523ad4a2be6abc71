"""What a sandbox's timeout does (kill, pause, pause its files only) and resuming on traffic, over the fake
backend on both databases; and revision 0009_on_timeout on a database with a sandbox in it."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from sandboxd.config import Settings
from sandboxd.core import events as ev
from sandboxd.core.lifecycle import CreateRequest
from sandboxd.core.store import db
from sandboxd.errors import Invalid, NotFound
from sandboxd.wiring import ControlPlane
from support.controlplane import stop_clean
from support.database import insert_running_sandbox


@pytest.fixture
def settings(tmp_path, db_url):
    return Settings(data_dir=tmp_path / "data", backend="fake", database_url=db_url)


def test_sandboxes_stored_before_0009_are_killed_at_their_timeout(db_url):
    engine = db.make_engine(db_url)
    db.upgrade(engine, "0008_team_quotas")
    insert_running_sandbox(engine, "sbold")
    db.upgrade(engine)
    with engine.connect() as c:
        row = c.execute(sa.text("select on_timeout, auto_resume from sandboxes where id = 'sbold'")).one()
    assert (row[0], bool(row[1])) == ("kill", False)
    engine.dispose()


def test_a_lifecycle_that_cannot_be_is_refused():
    with pytest.raises(Invalid):
        CreateRequest(template_name="base", on_timeout="pause_fs", auto_resume=True)
    with pytest.raises(Invalid):
        CreateRequest(template_name="base", on_timeout="kill", auto_resume=True)
    with pytest.raises(Invalid):
        CreateRequest(template_name="base", on_timeout="hibernate")


async def _until(svc, sid: str, status: str) -> None:
    while svc.lifecycle.get(sid).status != status:
        await asyncio.sleep(0.05)


def test_the_timeout_pauses_and_the_paused_sandbox_still_ends(settings):
    async def run():
        svc = ControlPlane.build(settings)
        await svc.start()
        try:
            sb, _, _ = await svc.lifecycle.create(CreateRequest(template_name="base", on_timeout="pause"))
            await svc.lifecycle.set_timeout(sb.id, 1)
            await asyncio.wait_for(_until(svc, sb.id, "paused"), 30)
            paused = svc.lifecycle.get(sb.id)
            # Paused at its timeout, it is kept default_timeout_seconds more, not killed at once.
            assert paused.expires_at >= datetime.now(timezone.utc) + timedelta(
                seconds=settings.default_timeout_seconds - 60)
            assert not await svc.lifecycle.resume_on_traffic(sb.id)  # created without auto-resume
            assert svc.lifecycle.get(sb.id).status == "paused"
            await svc.lifecycle.set_timeout(sb.id, 1)  # its end, brought forward: a paused sandbox is killed
            with pytest.raises(NotFound):
                await asyncio.wait_for(_until(svc, sb.id, "killed"), 30)

            fs, _, _ = await svc.lifecycle.create(CreateRequest(template_name="base", on_timeout="pause_fs"))
            await svc.lifecycle.set_timeout(fs.id, 1)
            await asyncio.wait_for(_until(svc, fs.id, "stopped"), 30)
            assert not await svc.lifecycle.resume_on_traffic(fs.id)

            kill, _, _ = await svc.lifecycle.create(CreateRequest(template_name="base"))
            await svc.lifecycle.set_timeout(kill.id, 1)
            with pytest.raises(NotFound):
                await asyncio.wait_for(_until(svc, kill.id, "killed"), 30)
        finally:
            await stop_clean(svc)
            svc.store.engine.dispose()

    asyncio.run(run())


def test_concurrent_traffic_resumes_a_paused_sandbox_once(settings):
    async def run():
        svc = ControlPlane.build(settings)
        await svc.start()
        resumes = []
        real_resume = svc.lifecycle.backend.resume

        async def counted(sid: str) -> None:
            resumes.append(sid)
            await real_resume(sid)

        svc.lifecycle.backend.resume = counted
        q = svc.bus.subscribe()
        try:
            sb, _, _ = await svc.lifecycle.create(CreateRequest(template_name="base", timeout_seconds=600,
                                                                on_timeout="pause", auto_resume=True))
            await svc.lifecycle.set_timeout(sb.id, 1)
            await asyncio.wait_for(_until(svc, sb.id, "paused"), 30)
            woken = await asyncio.gather(*(svc.lifecycle.resume_on_traffic(sb.id) for _ in range(8)))
            # Read before the next await: with its 1 s timeout started again, it soon pauses again.
            now = svc.lifecycle.get(sb.id)
            types = []
            while not q.empty():
                e = q.get_nowait()
                if e.sandbox_id == sb.id:
                    types.append(e.type)
            assert woken == [True] * 8 and resumes == [sb.id]
            assert types.count(ev.PAUSED) == 1 and types.count(ev.RESUMED) == 1
            assert now.status == "running" and now.expires_at > now.started_at
        finally:
            await stop_clean(svc)
            svc.store.engine.dispose()

    asyncio.run(run())
