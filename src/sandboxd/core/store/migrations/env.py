"""Alembic environment: the engine is handed in by sandboxd.core.store.db.upgrade (no ini file)."""
from __future__ import annotations

from alembic import context

from sandboxd.core.store.base import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # run from the alembic command line: take the URL from the settings
    from sandboxd.config import get_settings
    from sandboxd.core.store.db import make_engine

    engine = make_engine(get_settings().effective_database_url)

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
