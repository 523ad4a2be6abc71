"""Warm pool pieces that need no sandbox: the settings syntax, persistence of members and targets."""
from __future__ import annotations

from pathlib import Path

import pytest

from sandboxd.config import Settings
from sandboxd.errors import Invalid
from sandboxd.core.pool import Member, WarmPoolService, parse_targets
from sandboxd.runtime.base import Resources


def test_parse_targets():
    assert parse_targets("") == {}
    assert parse_targets(" base=3 , code-interpreter=2,") == {"base": 3, "code-interpreter": 2}
    assert parse_targets("base") == {"base": 1}
    for bad in ("base=x", "=2", "base=-1", "base=100000"):
        with pytest.raises(Invalid):
            parse_targets(bad)


def test_members_and_targets_survive_a_restart(tmp_path):
    settings = Settings(data_dir=tmp_path, backend="fake")
    pool = WarmPoolService(settings, backend=None, catalog=None)
    pool._stat("tpl1").target = 3
    pool.names["tpl1"] = "base"
    m = Member(id="sbabc", template_id="tpl1", content_hash="h1", resources=Resources(vcpu=2, memory_mb=512),
               socket=Path("/x/agent.sock"), kernel=True)
    pool.ready["tpl1"] = __import__("collections").deque([m])
    pool._save()

    again = WarmPoolService(settings, backend=None, catalog=None)
    assert again.owns("sbabc") and not again.owns("sbother")  # reconcile must leave it alone
    assert again.stats["tpl1"].target == 3 and again.names["tpl1"] == "base"
    assert again._restored[0]["resources"]["memory_mb"] == 512 and again._restored[0]["kernel"] is True


def test_claim_without_pool_or_members_is_none_and_counts_misses(tmp_path):
    pool = WarmPoolService(Settings(data_dir=tmp_path, backend="fake"), backend=None, catalog=None)

    class T:
        id, name = "tpl1", "base"

    assert pool.claim(T) is None and "tpl1" not in pool.stats  # not pooled: not a miss either
    pool._stat("tpl1").target = 1
    assert pool.claim(T) is None and pool.stats["tpl1"].misses == 1
    text = pool.prometheus()
    assert 'sandboxd_pool_misses_total{template="tpl1"} 1' in text


async def test_refills_wait_while_a_cold_create_runs(tmp_path):
    """A refill does not start (does not even look its template up) while a user's cold create is in flight."""
    import asyncio

    started = []

    class Catalog:
        def get(self, tid):
            started.append(tid)
            raise LookupError("stop here: only the start matters")

    pool = WarmPoolService(Settings(data_dir=tmp_path, backend="fake"), backend=None, catalog=Catalog())
    with pool.cold_start():
        fill = asyncio.create_task(pool._fill_one("tpl1"))
        await asyncio.sleep(0.05)
        assert started == [] and not fill.done()
    await asyncio.wait_for(fill, 5)
    assert started == ["tpl1"] and pool.stats["tpl1"].fill_failures == 1


async def test_a_create_whose_row_is_refused_gives_its_claimed_member_back(tmp_path):
    """The claim happens before the row is stored; a row the database refuses must not strand the member."""
    from sqlalchemy.exc import StatementError

    from sandboxd.core.lifecycle import CreateRequest
    from sandboxd.wiring import ControlPlane
    from sandboxd.core.store.tables import SandboxRow

    settings = Settings(data_dir=tmp_path, backend="fake")
    svc = ControlPlane.build(settings)
    await svc.start()
    tid = svc.catalog.get("base").id
    pool = WarmPoolService(settings, backend=None, catalog=None)
    pool._stat(tid).target = 1
    m = Member(id="sbmember", template_id=tid, content_hash="h", resources=Resources(), socket=Path("/x/s"))
    pool.ready[tid] = __import__("collections").deque([m])
    svc.lifecycle.pool = pool
    with pytest.raises(StatementError):  # the row cannot be stored
        await svc.lifecycle.create(CreateRequest(template_name="base", metadata={"k": object()}))  # not JSON
    assert list(pool.ready[tid]) == [m] and not pool.claimed and pool.stats[tid].hits == 0
    with svc.store.tx() as s:
        assert s.get(SandboxRow, "sbmember") is None
    await svc.stop()
