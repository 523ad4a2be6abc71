"""The control plane's database: opened, every table registered and migrated before any service uses it."""
from __future__ import annotations

from sandboxd.config import Settings
from sandboxd.core.store.db import Store, make_engine, upgrade


def register_tables() -> None:
    """Put every table module on the shared metadata before migrating or querying."""
    import sandboxd.core.store.monitoring  # noqa: F401
    import sandboxd.core.store.tables  # noqa: F401


def open_store(settings: Settings) -> Store:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    register_tables()
    upgrade(engine)
    return Store(engine)
