"""Team quotas in the lifecycle service (both databases, fake backend): concurrent creates and starts of one team
are counted one after the other, so together they cannot pass a quota that each alone would meet."""
from __future__ import annotations

import asyncio

import pytest

from sandboxd.config import Settings
from sandboxd.core.admission import HostFull
from sandboxd.core.lifecycle import CreateRequest
from sandboxd.core.teams import TeamService
from sandboxd.errors import Invalid, QuotaExceeded
from sandboxd.wiring import ControlPlane
from support.controlplane import stop_clean


@pytest.fixture
def settings(tmp_path, db_url):
    return Settings(data_dir=tmp_path / "data", backend="fake", database_url=db_url)


def _run(settings, body) -> None:
    async def run():
        svc = ControlPlane.build(settings)
        await svc.start()
        try:
            await body(svc, TeamService(svc.store))
        finally:
            await stop_clean(svc)

    asyncio.run(run())


def test_concurrent_creates_of_a_team_are_counted_one_after_the_other(settings):
    async def body(svc, teams):
        team = teams.create("busy")
        teams.set_quotas("busy", {"max_sandboxes": 2})
        made = await asyncio.gather(*(svc.lifecycle.create(CreateRequest(template_name="base"), team_id=team.id)
                                      for _ in range(4)), return_exceptions=True)
        refused = [r for r in made if isinstance(r, QuotaExceeded)]
        assert len(refused) == 2 and len(made) - len(refused) == 2
        assert refused[0].details == {"quota": "max_sandboxes", "limit": 2, "current": 2}
        assert teams.show("busy")[1].sandboxes == 2

    _run(settings, body)


def test_concurrent_starts_cannot_pass_the_memory_quota_together(settings):
    async def body(svc, teams):
        team = teams.create("starters")
        made = [(await svc.lifecycle.create(CreateRequest(template_name="base", memory_mb=256), team_id=team.id))[0]
                for _ in range(2)]
        for sb in made:
            await svc.lifecycle.stop(sb.id)
        teams.set_quotas("starters", {"max_memory_mb": 256})
        started = await asyncio.gather(*(svc.lifecycle.start_sandbox(sb.id) for sb in made), return_exceptions=True)
        refused = [r for r in started if isinstance(r, QuotaExceeded)]
        assert len(refused) == 1 and refused[0].details["quota"] == "max_memory_mb"
        assert sorted(svc.lifecycle.get(sb.id).status for sb in made) == ["running", "stopped"]

    _run(settings, body)


def test_quota_changes_are_checked_and_leave_the_others(settings):
    async def body(svc, teams):
        teams.create("t")
        teams.set_quotas("t", {"max_vcpu": 4, "max_templates": 1})
        assert teams.set_quotas("t", {"max_vcpu": None}).quotas.max_templates == 1
        for bad in ({"max_gpus": 1}, {"max_vcpu": -1}, {"max_vcpu": True}, {"max_vcpu": 2**31}):
            with pytest.raises(Invalid):
                teams.set_quotas("t", bad)
        assert teams.show("t")[0].quotas.max_vcpu is None

    _run(settings, body)


def test_concurrent_starts_cannot_overcommit_the_host_together(settings):
    """The host's memory admission counts starts under way, as the team quota does."""
    async def body(svc, teams):
        made = [(await svc.lifecycle.create(CreateRequest(template_name="base", memory_mb=512)))[0] for _ in range(2)]
        for sb in made:
            await svc.lifecycle.stop(sb.id)
        svc.lifecycle.admission.memory_capacity_mb = 700  # room for one of them: stopped, they hold none
        started = await asyncio.gather(*(svc.lifecycle.start_sandbox(sb.id) for sb in made), return_exceptions=True)
        refused = [r for r in started if isinstance(r, HostFull)]
        assert len(refused) == 1, started
        assert sorted(svc.lifecycle.get(sb.id).status for sb in made) == ["running", "stopped"]

    _run(settings, body)

