"""API keys: stored as sha256 hashes (the key is shown once, at creation), operator flag, team and role, per-key
rate limit. The team rides in the cached lookup, so scoping a request costs no query."""
from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import func, select

from sandboxd.errors import Invalid, NotFound
from sandboxd.core.models import iso
from sandboxd.core.store.db import Store
from sandboxd.core.store.tables import DEFAULT_TEAM_ID, ApiKeyRow

KEY_PREFIX = "sbx_"
ROLES = ("admin", "member")
CACHE_SECONDS = 5.0  # other control planes may revoke a key; a lookup is re-checked this often


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    is_admin: bool
    rate_limit_per_minute: int | None
    created_at: datetime
    revoked_at: datetime | None = None
    team_id: str = DEFAULT_TEAM_ID
    role: str = "member"  # admin: manages its team's keys, webhooks and templates

    @property
    def scope(self) -> str | None:
        """The team whose resources this key sees; None for the operator, who sees every team's."""
        return None if self.is_admin else self.team_id

    @property
    def team_admin(self) -> bool:
        return self.is_admin or self.role == "admin"

    def to_wire(self) -> dict:
        return {"id": self.id, "object": "api_key", "name": self.name, "prefix": self.prefix, "admin": self.is_admin,
                "rate_limit_per_minute": self.rate_limit_per_minute, "created_at": iso(self.created_at),
                "revoked": self.revoked_at is not None, "revoked_at": iso(self.revoked_at),
                "team_id": self.team_id, "role": self.role}


def _model(r: ApiKeyRow) -> ApiKey:
    return ApiKey(r.id, r.name, r.prefix, r.is_admin, r.rate_limit_per_minute, r.created_at, r.revoked_at,
                  r.team_id or DEFAULT_TEAM_ID, r.role or "member")


class ApiKeyService:
    def __init__(self, store: Store):
        self.store = store
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    def count(self) -> int:
        with self.store.tx() as s:
            return s.scalar(select(func.count()).select_from(ApiKeyRow)) or 0

    def create(self, name: str, *, admin: bool = False, rate_limit_per_minute: int | None = None,
               key: str | None = None, team_id: str = DEFAULT_TEAM_ID, role: str = "member") -> tuple[ApiKey, str]:
        if not name or len(name) > 128:
            raise Invalid("name must be 1..128 characters", code="invalid_name")
        if key is not None and len(key) < 8:
            raise Invalid("an API key must have at least 8 characters", code="invalid_key")
        if role not in ROLES:
            raise Invalid(f"role must be one of {', '.join(ROLES)}", code="invalid_role")
        key = key or KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKeyRow(id="key_" + secrets.token_hex(8), name=name, prefix=key[:8], key_hash=hash_key(key),
                        is_admin=admin, team_id=team_id, role="admin" if admin else role, rate_limit_per_minute=rate_limit_per_minute,
                        created_at=datetime.now(timezone.utc))
        with self.store.tx() as s:
            s.add(row)
        return _model(row), key

    def bootstrap(self, key: str | None) -> str | None:
        """On a fresh install make the first admin key (given, or generated and returned to print once)."""
        if self.count():
            return None
        _, secret = self.create("admin", admin=True, key=key)
        return secret

    def list(self, team_id: str | None = None) -> list[ApiKey]:
        q = select(ApiKeyRow).order_by(ApiKeyRow.created_at)
        if team_id is not None:
            q = q.where(ApiKeyRow.team_id == team_id)
        with self.store.tx() as s:
            return [_model(r) for r in s.scalars(q)]

    def revoke(self, key_id: str, team_id: str | None = None) -> ApiKey:
        with self.store.tx() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None or row.revoked_at is not None or team_id not in (None, row.team_id):
                raise NotFound(f"api key {key_id} not found", code="api_key_not_found")
            row.revoked_at = datetime.now(timezone.utc)
            model = _model(row)
        self._cache.clear()
        return model

    def lookup(self, key: str) -> ApiKey | None:
        h = hash_key(key)
        now = time.monotonic()
        hit = self._cache.get(h)
        if hit is not None and hit[0] > now:
            return hit[1]
        with self.store.tx() as s:
            row = s.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == h))
            found = _model(row) if row is not None and row.revoked_at is None else None
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[h] = (now + CACHE_SECONDS, found)
        return found
