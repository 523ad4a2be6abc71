"""The declarative base every table module shares (one metadata, one Alembic history).

The store uses SQLAlchemy 2.0's synchronous engine (SQLite by default, PostgreSQL via
SANDBOXD_DATABASE_URL); async code calls it through short transactions. Alembic revisions:
0001_core (sandboxes, templates, builds, api keys, events) then 0002_monitoring (samples, webhooks, deliveries).
"""
from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass
