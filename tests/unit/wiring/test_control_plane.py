"""The composition root on the fake backend: one set of services, started in order and stopped in reverse,
handed to the app as typed fields; a malformed build recipe is refused at trigger time."""
from __future__ import annotations

import pytest

from sandboxd.api.app import create_app
from sandboxd.config import Settings
from sandboxd.core.builds import BuildRequest
from sandboxd.core.template_source import check_recipe
from sandboxd.errors import Invalid
from sandboxd.wiring import ControlPlane


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=tmp_path / "data", backend="fake", sample_interval_seconds=0.05)


async def test_start_runs_every_service_and_stop_ends_them(settings):
    plane = ControlPlane.build(settings)
    assert plane.lifecycle.pool is plane.pool and plane.monitor.lifecycle is plane.lifecycle
    await plane.start()
    try:
        assert plane.catalog.get("base").name == "base"
        assert plane.monitor.loop is not None and plane.monitor._tasks and not any(t.done() for t in plane.monitor._tasks)
        await plane.monitor.wait_sample()  # the sampler ticks: the monitor really runs
    finally:
        await plane.stop()
    assert plane.monitor._tasks == []


def test_the_app_serves_the_plane_it_was_given(settings):
    plane = ControlPlane.build(settings)
    app = create_app(settings, plane, manage=False)
    assert app.state.services is plane
    assert app.state.metrics_hub.monitor is plane.monitor and app.state.metrics_hub.lifecycle is plane.lifecycle
    plane.store.engine.dispose()


def test_a_malformed_recipe_is_refused_when_the_build_is_triggered():
    req = BuildRequest(name="t", from_image="", steps=[], start_cmd=None, ready_cmd=None, cpu=1, memory_mb=512,
                       disk_gb=1, skip_cache=False, update=False)
    with pytest.raises(Invalid, match="from_image"):
        check_recipe(req)


def test_the_gateway_routes_e2b_first_and_forgets_sandboxes_that_are_gone(settings, monkeypatch):
    from pathlib import Path

    from sandboxd.core.routes import SandboxRoute
    from sandboxd.gateway.e2b import E2BResolver
    from sandboxd.gateway.routing import BearerResolver
    from sandboxd.wiring import make_gateway

    plane = ControlPlane.build(settings)
    gateway = make_gateway(plane)
    assert [type(r) for r in gateway.resolvers] == [E2BResolver, BearerResolver]
    forgotten = []
    monkeypatch.setattr(gateway, "forget", forgotten.append)
    plane.lifecycle.routes.gone("sb1", SandboxRoute(Path("/x/agent.sock"), "running", 1))
    assert forgotten == [Path("/x/agent.sock")]
    plane.store.engine.dispose()
