"""The control plane's composition root: builds every service from settings, starts them in order and stops
them in reverse. The API app, the gateway and `sandboxd serve` take a `ControlPlane` from here; nothing
below this module looks a service up. docs/architecture.md draws the layers."""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from sandboxd.config import Settings
from sandboxd.core.apikeys import ApiKeyService
from sandboxd.core.builds import BuildService
from sandboxd.core.catalog import CatalogService, TemplateSource
from sandboxd.core.eventlog import EventLog
from sandboxd.core.events import EventBus
from sandboxd.core.lifecycle import LifecycleService
from sandboxd.core.volumes import VolumeService
from sandboxd.core.pool import WarmPoolService
from sandboxd.core.snapshots import SnapshotService
from sandboxd.core.services import open_store
from sandboxd.core.store.db import Store
from sandboxd.core.template_source import FakeTemplateSource, StoreTemplateSource
from sandboxd.core.tokens import TokenSigner, load_secret
from sandboxd.gateway.e2b import resolver as e2b_resolver
from sandboxd.gateway.limits import Limits
from sandboxd.gateway.proxy import Gateway
from sandboxd.gateway.routing import BearerResolver
from sandboxd.monitor.service import MonitorService
from sandboxd.runtime import get_backend
from sandboxd.runtime.base import Backend

log = logging.getLogger(__name__)


def make_template_source(settings: Settings, backend: Backend) -> TemplateSource:
    if backend.capabilities.isolation == "process":  # the fake backend runs agents on the host: no images
        return FakeTemplateSource(settings)
    return StoreTemplateSource(settings, backend)


@dataclass
class ControlPlane:
    settings: Settings
    store: Store
    bus: EventBus
    events: EventLog
    keys: ApiKeyService
    signer: TokenSigner
    catalog: CatalogService
    lifecycle: LifecycleService
    pool: WarmPoolService
    builds: BuildService
    monitor: MonitorService
    backend: Backend
    snapshots: SnapshotService
    volumes: VolumeService

    @property
    def public_host(self) -> str:
        return self.settings.effective_public_host

    @classmethod
    def build(cls, settings: Settings, backend: Backend | None = None) -> "ControlPlane":
        store = open_store(settings)
        bus = EventBus()
        events = EventLog(store, bus)
        backend = backend or get_backend(settings)
        secret = load_secret(settings.jwt_secret.get_secret_value() if settings.jwt_secret else None, settings.data_dir)
        signer = TokenSigner(secret, settings.token_ttl_seconds, envd_ttl_seconds=settings.envd_token_ttl_seconds,
                             grace_seconds=settings.token_refresh_grace_seconds, store=store)
        catalog = CatalogService(store, events, make_template_source(settings, backend))
        lifecycle = LifecycleService(settings, store, backend, events, catalog, signer)
        # Empty unless settings.pool or the API sizes it.
        pool = WarmPoolService(settings, backend, catalog, in_use=lifecycle.get)
        pool.room = lifecycle.room_for
        lifecycle.pool = pool
        builds = BuildService(settings, store, events, catalog, signer, backend=backend)
        monitor = MonitorService(settings, store, backend, bus, lifecycle)
        return cls(settings, store, bus, events, ApiKeyService(store), signer, catalog, lifecycle, pool, builds,
                   monitor, backend, SnapshotService(catalog, lifecycle, backend, bus),
                   VolumeService(store, settings.data_dir, secret, settings.uid_base, settings.uid_count))

    async def start(self) -> None:
        self.catalog.sync_builtins()
        await self.lifecycle.start()
        await self.pool.start()
        await self.builds.start()
        await self.snapshots.start()
        await self.monitor.start()

    async def stop(self) -> None:
        try:
            await self.monitor.stop()
        except Exception:
            log.exception("stopping the monitor failed")
        await self.snapshots.stop()
        await self.builds.stop()
        await self.pool.stop()
        await self.lifecycle.close()
        await self.backend.close()
        self.store.engine.dispose()


def make_gateway(plane: ControlPlane) -> Gateway:
    """The gateway over the plane's sandboxes: E2B's E2b-Sandbox-Id routing first, then sandbox JWTs; it
    forgets a sandbox's connections when the lifecycle service reports it gone."""
    settings = plane.settings
    gateway = Gateway([e2b_resolver(plane), BearerResolver(plane.signer, plane.lifecycle)],
                      public_host=settings.public_host, limits=Limits.from_settings(settings),
                      observe=functools.partial(plane.monitor.platform.http.observe, "gateway"))
    plane.lifecycle.routes.subscribe_gone(lambda _sid, sock: gateway.forget(sock))
    return gateway
