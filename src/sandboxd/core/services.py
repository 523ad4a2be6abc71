"""Builds and wires the control plane's services from settings; the app's lifespan and `serve` share it."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sandboxd.config import Settings
from sandboxd.core.apikeys import ApiKeyService
from sandboxd.core.catalog import CatalogService, TemplateSource
from sandboxd.core.eventlog import EventLog
from sandboxd.core.events import EventBus
from sandboxd.core.lifecycle import LifecycleService
from sandboxd.core.store.db import Store, make_engine, upgrade
from sandboxd.core.tokens import TokenSigner, load_secret
from sandboxd.runtime.base import Backend

log = logging.getLogger(__name__)


def make_backend(settings: Settings) -> Backend:
    if settings.backend == "fake":
        from sandboxd.runtime.fake import FakeBackend

        return FakeBackend(settings)
    from sandboxd.runtime import get_backend  # the runtime room's factory (crun default)

    return get_backend(settings)


def make_template_source(settings: Settings, backend: Backend) -> TemplateSource:
    if backend.capabilities.isolation == "process":
        from sandboxd.runtime.fake.templates import FakeTemplateSource

        return FakeTemplateSource(settings)
    from sandboxd.core.template_source import StoreTemplateSource

    return StoreTemplateSource(settings, backend)


@dataclass
class Services:
    settings: Settings
    store: Store
    bus: EventBus
    events: EventLog
    keys: ApiKeyService
    signer: TokenSigner
    catalog: CatalogService
    lifecycle: LifecycleService
    backend: Backend
    builds: object | None = None
    extras: list = field(default_factory=list)  # other rooms' services with async start()/stop()

    @property
    def public_host(self) -> str:
        return self.settings.effective_public_host

    @classmethod
    def build(cls, settings: Settings, backend: Backend | None = None) -> "Services":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.effective_database_url)
        _import_tables()
        upgrade(engine)
        store = Store(engine)
        bus = EventBus()
        events = EventLog(store, bus)
        backend = backend or make_backend(settings)
        secret = load_secret(settings.jwt_secret.get_secret_value() if settings.jwt_secret else None, settings.data_dir)
        signer = TokenSigner(secret, settings.token_ttl_seconds, envd_ttl_seconds=settings.envd_token_ttl_seconds,
                             grace_seconds=settings.token_refresh_grace_seconds, store=store)
        catalog = CatalogService(store, events, make_template_source(settings, backend))
        lifecycle = LifecycleService(settings, store, backend, events, catalog, signer)
        from sandboxd.core.pool import WarmPoolService

        lifecycle.pool = WarmPoolService(settings, backend, catalog, in_use=lifecycle.get)  # empty unless settings.pool or the API sizes it
        lifecycle.pool.room = lifecycle.room_for
        svc = cls(settings, store, bus, events, ApiKeyService(store), signer, catalog, lifecycle, backend)
        from sandboxd.core.builds import BuildService

        svc.builds = BuildService(settings, store, events, catalog, signer, backend=backend)
        return svc

    async def start(self) -> None:
        self.catalog.sync_builtins()
        await self.lifecycle.start()
        await self.lifecycle.pool.start()
        await self.builds.start()
        try:
            from sandboxd.monitor.service import MonitorService
        except ImportError:
            MonitorService = None  # the monitoring room's module is not there yet
        if MonitorService is not None:
            mon = MonitorService(self.settings, self.store.engine, self.backend, self.bus, self.lifecycle)
            await mon.start()
            self.extras.append(mon)

    async def stop(self) -> None:
        for extra in reversed(self.extras):
            try:
                await extra.stop()
            except Exception:
                log.exception("stopping %s failed", type(extra).__name__)
        await self.builds.stop()
        await self.lifecycle.pool.stop()
        await self.lifecycle.close()
        close = getattr(self.backend, "close", None)  # crun/runc: drop this data dir's empty runtime folders
        if close is not None:
            await close()
        self.store.engine.dispose()


def _import_tables() -> None:
    """Register every table module on the shared metadata (the monitoring room adds its own)."""
    import sandboxd.core.store.tables  # noqa: F401

    try:
        import sandboxd.core.store.monitoring  # noqa: F401
    except ImportError:
        pass
