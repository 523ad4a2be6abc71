"""The control-plane FastAPI app: routers, the error table, the middleware, services started by the lifespan."""
from __future__ import annotations

import functools
from contextlib import asynccontextmanager

from fastapi import FastAPI

from sandboxd import __version__
from sandboxd.api import errors
from sandboxd.api.metrics_feed import MetricsHub
from sandboxd.api.ratelimit import ControlPlaneMiddleware, RateLimiter
from sandboxd.api.request_metrics import RequestMetrics
from sandboxd.config import Settings, get_settings
from sandboxd.wiring import ControlPlane


def create_app(settings: Settings | None = None, services: ControlPlane | None = None, *,
               manage: bool = True) -> FastAPI:
    """`services` may be built by the caller (serve shares them with the gateway); with `manage` the
    app's lifespan starts and stops them."""
    settings = settings or get_settings()
    plane = services or ControlPlane.build(settings)
    hub = MetricsHub(plane.lifecycle, plane.monitor)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if manage:
            await plane.start()
        try:
            yield
        finally:
            await hub.close()
            if manage:
                await plane.stop()

    app = FastAPI(title="sandboxd control plane", version=__version__, lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None)
    app.state.services = plane
    app.state.metrics_hub = hub
    errors.install(app)
    app.add_middleware(ControlPlaneMiddleware, keys=plane.keys, limiter=RateLimiter(settings.rate_limit_per_minute),
                       max_body=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, observe=functools.partial(plane.monitor.platform.http.observe, "api"))

    from sandboxd.api.routes import builds, events, health, keys, metrics, pools, sandboxes, streams, templates, webhooks
    from sandboxd.api.routes import docs, usage
    from sandboxd.api.e2b import router as e2b_router

    # Streams first: /v1/sandboxes/stream must win over /v1/sandboxes/{id}.
    for module in (health, streams, sandboxes, builds, templates, keys, events, webhooks, metrics, usage):
        app.include_router(module.router)
    app.include_router(e2b_router)
    app.include_router(pools.router)
    app.include_router(docs.router)
    from sandboxd.api import dashboard
    app.include_router(dashboard.router)  # the web console, docs/dashboard.md
    return app
