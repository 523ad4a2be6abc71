"""Domain records the services hand to the API layer, and their wire shapes (HopX types, contract §5)."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, overload

from sandboxd.core.egress import EgressPolicy
from sandboxd.core.store.tables import DEFAULT_TEAM_ID

# Sandbox states and the transitions the state machine allows.
CREATING, RUNNING, PAUSED, STOPPED, KILLED = "creating", "running", "paused", "stopped", "killed"
LIVE_STATES = (CREATING, RUNNING, PAUSED, STOPPED)

# Why a sandbox ended (E2B's killed event carries it).
REASON_USER, REASON_TIMEOUT, REASON_OOM, REASON_ERROR, REASON_NODE_LOST = "user", "timeout", "oom", "error", "node_lost"

# What a sandbox's timeout does: kill it, pause it (memory kept), or pause its files only (it boots again).
ON_TIMEOUT_KILL, ON_TIMEOUT_PAUSE, ON_TIMEOUT_PAUSE_FS = "kill", "pause", "pause_fs"
ON_TIMEOUT = (ON_TIMEOUT_KILL, ON_TIMEOUT_PAUSE, ON_TIMEOUT_PAUSE_FS)

ORGANIZATION_ID = 1  # the default team's HopX organization (the SDK insists on an int here)


def organization_id(team_id: str | None) -> int:
    """The HopX `organization_id` of a team (docs/teams.md): the default team keeps 1, which every sandbox
    showed before teams; another team's is the 31-bit number its id's first hex digits spell, so the same
    team always shows the same one without a lookup."""
    if not team_id or team_id == DEFAULT_TEAM_ID:
        return ORGANIZATION_ID
    digits = team_id.removeprefix("team_")[:8]
    try:
        return (int(digits, 16) & 0x7FFFFFFF) or ORGANIZATION_ID + 1
    except ValueError:
        return ORGANIZATION_ID


@overload
def iso(dt: datetime) -> str: ...


@overload
def iso(dt: datetime | None) -> str | None: ...


def iso(dt: datetime | None) -> str | None:
    """RFC 3339 with a Z, which every client (Python < 3.11 fromisoformat included) parses."""
    if dt is None:
        return None
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# List cursors: opaque, (created_at, id) of the last item of a page (newest first).
def encode_cursor(created_at: datetime, sid: str) -> str:
    raw = json.dumps([created_at.isoformat(), sid]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, sid = json.loads(raw)
        when = datetime.fromisoformat(ts)
        if when.tzinfo is None:
            raise ValueError("naive time in cursor")
        return when, str(sid)
    except Exception:
        from sandboxd.errors import Invalid

        raise Invalid("invalid cursor", code="invalid_cursor") from None


@dataclass
class Sandbox:
    id: str
    status: str
    template_id: str | None
    template_name: str | None
    region: str
    node_id: str
    vcpu: float
    memory_mb: int
    disk_mb: int
    internet_access: bool
    env_vars: dict[str, str]
    timeout_seconds: int | None
    expires_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None = None
    kill_reason: str | None = None
    token_version: int = 1
    metadata: dict[str, Any] = field(default_factory=dict)
    public_traffic: bool = True  # its own ports answer without its token (gateway/e2b.py)
    team_id: str | None = None  # whose it is (docs/teams.md)
    on_timeout: str = ON_TIMEOUT_KILL
    auto_resume: bool = False  # traffic through the gateway resumes it when paused (docs/e2b.md)
    egress: dict[str, Any] | None = None  # its egress policy as stored (core/egress.py); None: none set
    volume_mounts: list[dict[str, str]] = field(default_factory=list)  # [{volume_id, name, path}] (core/volumes.py)

    def to_wire(self, public_host: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "sandbox",
            "status": self.status,
            "template_id": self.template_id,
            "template_name": self.template_name,
            "organization_id": organization_id(self.team_id),
            "node_id": self.node_id,
            "region": self.region,
            "public_host": public_host,
            "direct_url": public_host,
            "preview_url": None,
            "resources": {"vcpu": max(1, round(self.vcpu)), "memory_mb": self.memory_mb, "disk_mb": self.disk_mb},
            "internet_access": self.internet_access,
            "live_mode": True,
            "timeout_seconds": self.timeout_seconds,
            "expires_at": iso(self.expires_at),
            "created_at": iso(self.created_at),
            "metadata": dict(self.metadata),
            "network": EgressPolicy.from_dict(self.egress).shown() if self.egress is not None else None,
        }


@dataclass
class Template:
    id: str
    name: str
    display_name: str
    description: str | None
    category: str | None
    language: str | None
    is_public: bool
    status: str
    build_id: str | None
    error_message: str | None
    vcpu: int
    memory_mb: int
    disk_gb: int
    features: list[str]
    tags: list[str]
    created_at: datetime
    updated_at: datetime
    image_ref: str | None = None  # a tagged build's image (its content hash); None: the template's current one
    team_id: str | None = None  # None: a built-in, every team's
    published: bool = False  # its team lets every team start sandboxes from it (docs/teams.md)

    def to_wire(self) -> dict[str, Any]:
        res = {"vcpu": self.vcpu, "memory_mb": self.memory_mb, "disk_gb": self.disk_gb}
        return {
            "id": self.id,
            "object": "template",
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "category": self.category,
            "language": self.language,
            "icon": None,
            "default_resources": res,
            "min_resources": {"vcpu": 1, "memory_mb": 128, "disk_gb": 1},
            "max_resources": None,
            "features": list(self.features),
            "tags": list(self.tags),
            "popularity_score": None,
            "docs_url": None,
            "is_active": self.status == "active",
            "is_public": self.is_public or self.published,
            "status": self.status,
            "build_id": self.build_id,
            "organization_id": None if self.is_public else str(organization_id(self.team_id)),
            "error_message": self.error_message,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


def check_env(env: dict[str, str] | None) -> dict[str, str] | None:
    """Env vars reach execve: a NUL truncates, '=' in a name splits it, an empty name is no variable. One check for
    both dialects' creates; a ValueError becomes the API's 400 naming the field."""
    for k, v in (env or {}).items():
        if not k or "=" in k or "\0" in k or len(k) > 256:
            raise ValueError(f"invalid environment variable name {k!r}")
        if "\0" in v:
            raise ValueError(f"environment variable {k!r}: value contains a NUL byte")
    return env
