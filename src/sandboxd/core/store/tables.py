"""The control plane's tables (revision 0001_core). Times are stored as timezone-aware UTC."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON, Boolean, DateTime, Float, Integer, String, Text, TypeDecorator, UniqueConstraint, false, true,
)
from sqlalchemy.orm import Mapped, mapped_column

from sandboxd.core.store.base import Base

DEFAULT_TEAM_ID = "team_default"  # where a fresh install's and an upgraded database's keys and rows live


class UTCDateTime(TypeDecorator):
    """SQLite drops the zone; always hand back aware UTC datetimes so both databases behave alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class SandboxRow(Base):
    __tablename__ = "sandboxes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # creating|running|paused|stopped|killed
    template_id: Mapped[str | None] = mapped_column(String(64), index=True)
    template_name: Mapped[str | None] = mapped_column(String(128))
    region: Mapped[str] = mapped_column(String(64), default="local")
    node_id: Mapped[str] = mapped_column(String(128), default="local")
    vcpu: Mapped[float] = mapped_column(Float)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_mb: Mapped[int] = mapped_column(Integer)
    internet_access: Mapped[bool] = mapped_column(Boolean, default=False)
    public_traffic: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())  # its own ports
    egress: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # core/egress.py (revision 0010_egress_policy)
    # [{"volume_id", "name", "path"}] it mounts (core/volumes.py; revision 0011_volumes); None: none
    volume_mounts: Mapped[list | None] = mapped_column(JSON, nullable=True)
    env_vars: Mapped[dict] = mapped_column(JSON, default=dict)
    metadata_: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    timeout_seconds: Mapped[int | None] = mapped_column(Integer)
    # What its timeout does (kill|pause|pause_fs), and whether traffic resumes it once paused (revision 0009).
    on_timeout: Mapped[str] = mapped_column(String(16), default="kill", server_default="kill")
    auto_resume: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # start of the current run
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    kill_reason: Mapped[str | None] = mapped_column(String(32))
    api_key_id: Mapped[str | None] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(64), index=True)  # revision 0007_teams
    token_version: Mapped[int] = mapped_column(Integer, default=1)
    # HopX token refreshes (core/tokens.py Generations): the current generation, and until when the
    # previous one is still accepted (revision 0005_token_generation).
    token_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    token_grace_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class TemplateRow(Base):
    __tablename__ = "templates"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    display_name: Mapped[str] = mapped_column(String(256))
    description: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(64))
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)  # built-ins: cannot be deleted
    team_id: Mapped[str | None] = mapped_column(String(64), index=True)  # None: a built-in, every team's
    # Its team published it: every team may start sandboxes from it; only its team changes it (revision 0008)
    published: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    status: Mapped[str] = mapped_column(String(16))  # building|active|failed
    build_id: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    vcpu: Mapped[int] = mapped_column(Integer, default=1)
    memory_mb: Mapped[int] = mapped_column(Integer, default=1024)
    disk_gb: Mapped[int] = mapped_column(Integer, default=2)
    features: Mapped[list] = mapped_column(JSON, default=list)
    tags: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class BuildRow(Base):
    __tablename__ = "builds"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    template_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))  # building|active|failed
    progress: Mapped[int] = mapped_column(Integer, default=0)
    current_step: Mapped[str | None] = mapped_column(String(256))
    error_message: Mapped[str | None] = mapped_column(Text)
    request: Mapped[dict] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    content_hash: Mapped[str | None] = mapped_column(String(64))  # the image it made (revision 0006)


class TemplateTagRow(Base):
    """A tag names one build of a template (E2B's `name:tag`; revision 0006_template_tags)."""

    __tablename__ = "template_tags"

    template_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tag: Mapped[str] = mapped_column(String(128), primary_key=True)
    build_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TeamRow(Base):
    """A team owns keys, sandboxes, templates and webhooks (revision 0007_teams; docs/teams.md)."""

    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Quotas the operator set (revision 0008_team_quotas); None: the operator's defaults apply (docs/teams.md).
    max_sandboxes: Mapped[int | None] = mapped_column(Integer)
    max_vcpu: Mapped[int | None] = mapped_column(Integer)
    max_memory_mb: Mapped[int | None] = mapped_column(Integer)
    max_disk_mb: Mapped[int | None] = mapped_column(Integer)
    max_templates: Mapped[int | None] = mapped_column(Integer)
    max_creates_per_minute: Mapped[int | None] = mapped_column(Integer)
    team_quotas: Mapped[dict | None] = mapped_column(JSON)  # the team admin's own limits, within the above


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))  # shown in lists so a key can be recognised
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex; the key itself is never kept
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)  # the operator: every team, pools, teams
    team_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TEAM_ID, server_default=DEFAULT_TEAM_ID)
    role: Mapped[str] = mapped_column(String(16), default="member", server_default="member")  # admin|member
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class VolumeRow(Base):
    """A team's persistent directory, mounted into its sandboxes (revision 0011_volumes; core/volumes.py)."""

    __tablename__ = "volumes"
    __table_args__ = (UniqueConstraint("team_id", "name", name="uq_volumes_team_name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    team_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class EventRow(Base):
    __tablename__ = "events"

    # Monotonic integer id: SSE `id:` and the Last-Event-ID resume point.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(64), index=True)
    sandbox_id: Mapped[str | None] = mapped_column(String(64), index=True)
    template_id: Mapped[str | None] = mapped_column(String(64))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    data: Mapped[dict] = mapped_column(JSON, default=dict)


class IdempotencyRow(Base):
    """An E2B create's Idempotency-Key (revision 0003_idempotency)."""

    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    sandbox_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
