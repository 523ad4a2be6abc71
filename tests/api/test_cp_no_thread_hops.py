"""Every dependency of the control plane's routes is a coroutine: FastAPI runs a plain `def` dependency on its
thread pool, and that hop (a GIL hand-off each way) was ≈ 30 % of a GET's CPU in the daemon
(docs/performance.md). The handlers of the hot path (create, get, kill, pause, resume, connect) are too."""
from __future__ import annotations

import asyncio
import tempfile

from fastapi.routing import APIRoute

from sandboxd.config import Settings

HOT = {("POST", "/v1/sandboxes"), ("GET", "/v1/sandboxes/{sandbox_id}"), ("DELETE", "/v1/sandboxes/{sandbox_id}"),
       ("POST", "/v1/sandboxes/{sandbox_id}/pause"), ("POST", "/v1/sandboxes/{sandbox_id}/resume"),
       ("POST", "/sandboxes"), ("DELETE", "/sandboxes/{sandbox_id}"), ("POST", "/sandboxes/{sandbox_id}/connect")}


def _routes(routes):
    """APIRoutes, also those of included routers (this FastAPI nests them lazily; their paths carry the prefix)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from _routes(route.original_router.routes)


def _dependencies(dependant):
    for dep in dependant.dependencies:
        yield dep
        yield from _dependencies(dep)


def test_dependencies_and_hot_handlers_run_on_the_event_loop():
    from sandboxd.api.app import create_app

    app = create_app(Settings(data_dir=tempfile.mkdtemp(prefix="test-hops"), backend="fake"))
    sync_deps, sync_hot, seen = set(), set(), set()
    for route in _routes(app.routes):
        for dep in _dependencies(route.dependant):
            if dep.call is not None and not asyncio.iscoroutinefunction(dep.call):
                sync_deps.add(f"{dep.call.__module__}.{dep.call.__name__}")
        for method in route.methods:
            if (method, route.path) in HOT:
                seen.add((method, route.path))
                if not asyncio.iscoroutinefunction(route.endpoint):
                    sync_hot.add((method, route.path))
    assert seen == HOT  # the list above still names real routes
    assert not sync_deps, sync_deps
    assert not sync_hot, sync_hot
