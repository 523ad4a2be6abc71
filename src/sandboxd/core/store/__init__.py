"""The control plane's store: SQLAlchemy 2.0 (sync engine), SQLite by default, PostgreSQL by URL."""
from sandboxd.core.store.db import Store, make_engine, upgrade

__all__ = ["Store", "make_engine", "upgrade"]
