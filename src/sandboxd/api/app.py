"""The control-plane FastAPI app: routers, the error table, the middleware, services started by the lifespan."""
from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from sandboxd import __version__
from sandboxd.api import errors
from sandboxd.api.ratelimit import ControlPlaneMiddleware, RateLimiter
from sandboxd.config import Settings, get_settings
from sandboxd.core.services import Services


def create_app(settings: Settings | None = None, services: Services | None = None, *, manage: bool = True) -> FastAPI:
    """`services` may be built by the caller (serve shares them with the gateway); with `manage` the
    app's lifespan starts and stops them."""
    settings = settings or get_settings()
    svc = services or Services.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if manage:
            await svc.start()
        try:
            yield
        finally:
            hub = getattr(app.state, "metrics_hub", None)
            if hub is not None:
                await hub.close()
            if manage:
                await svc.stop()

    app = FastAPI(title="sandboxd control plane", version=__version__, lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None)
    app.state.services = svc
    errors.install(app)
    app.add_middleware(ControlPlaneMiddleware, keys=svc.keys, limiter=RateLimiter(settings.rate_limit_per_minute),
                       max_body=settings.max_body_bytes)

    from sandboxd.api.routes import builds, events, health, keys, metrics, sandboxes, streams, templates, webhooks
    from sandboxd.api.e2b import router as e2b_router

    # Streams first: /v1/sandboxes/stream must win over /v1/sandboxes/{id}.
    for module in (health, streams, sandboxes, builds, templates, keys, events, webhooks, metrics):
        app.include_router(module.router)
    app.include_router(e2b_router)
    from sandboxd.api.routes import pools

    app.include_router(pools.router)
    return app
