"""Teams (docs/teams.md): a team owns its keys, sandboxes, custom templates and webhooks.

Another team's resource answers exactly like a missing one, so ids cannot be probed across teams.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import func, select

from sandboxd.core.models import LIVE_STATES, iso
from sandboxd.core.store.db import Store
from sandboxd.core.store.tables import DEFAULT_TEAM_ID, ApiKeyRow, SandboxRow, TeamRow
from sandboxd.errors import Conflict, Invalid, NotFound

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Team:
    id: str
    name: str
    created_at: datetime

    def to_wire(self) -> dict:
        return {"id": self.id, "object": "team", "name": self.name, "created_at": iso(self.created_at)}


def _model(r: TeamRow) -> Team:
    return Team(r.id, r.name, r.created_at)


class TeamService:
    def __init__(self, store: Store):
        self.store = store

    def create(self, name: str) -> Team:
        if not NAME.match(name or ""):
            raise Invalid("a team name is 1..64 of a-z, 0-9, '-' and '_'", code="invalid_name")
        with self.store.tx() as s:
            if s.scalar(select(TeamRow).where(TeamRow.name == name)) is not None:
                raise Conflict(f"team {name} already exists", code="team_exists")
            row = TeamRow(id="team_" + secrets.token_hex(8), name=name, created_at=datetime.now(timezone.utc))
            s.add(row)
            return _model(row)

    def list(self) -> list[Team]:
        with self.store.tx() as s:
            return [_model(r) for r in s.scalars(select(TeamRow).order_by(TeamRow.created_at))]

    def resolve(self, id_or_name: str) -> Team:
        with self.store.tx() as s:
            row = s.get(TeamRow, id_or_name) or s.scalar(select(TeamRow).where(TeamRow.name == id_or_name))
            if row is None:
                raise NotFound(f"team {id_or_name} not found", code="team_not_found")
            return _model(row)

    def delete(self, id_or_name: str) -> Team:
        """Only an empty team goes: its keys revoked and its sandboxes gone first, so nothing is orphaned."""
        team = self.resolve(id_or_name)
        if team.id == DEFAULT_TEAM_ID:
            raise Conflict("the default team cannot be deleted", code="default_team")
        with self.store.tx() as s:
            keys = s.scalar(select(func.count()).select_from(ApiKeyRow).where(
                ApiKeyRow.team_id == team.id, ApiKeyRow.revoked_at.is_(None))) or 0
            live = s.scalar(select(func.count()).select_from(SandboxRow).where(
                SandboxRow.team_id == team.id, SandboxRow.status.in_(LIVE_STATES))) or 0
            if keys or live:
                raise Conflict(f"team {team.name} still has {keys} key(s) and {live} sandbox(es)",
                               code="team_not_empty")
            s.delete(s.get(TeamRow, team.id))
        return team
