"""Teams (docs/teams.md): a team owns its keys, sandboxes, custom templates and webhooks.

Another team's resource answers exactly like a missing one, so ids cannot be probed across teams.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import func, select

from sandboxd.core.models import LIVE_STATES, iso, organization_id
from sandboxd.core.quotas import FIELDS as QUOTAS, MAX_QUOTA, Quotas, Usage, usage
from sandboxd.core.store.db import Store
from sandboxd.core.store.tables import DEFAULT_TEAM_ID, ApiKeyRow, SandboxRow, TeamRow, VolumeRow
from sandboxd.errors import Conflict, Invalid, NotFound

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Team:
    id: str
    name: str
    created_at: datetime
    quotas: Quotas = field(default_factory=Quotas)  # what holds: the lower of the two below
    operator_quotas: Quotas = field(default_factory=Quotas)
    team_quotas: Quotas = field(default_factory=Quotas)  # the team admin's own, within the operator's

    def to_wire(self) -> dict:
        return {"id": self.id, "object": "team", "name": self.name, "created_at": iso(self.created_at),
                "organization_id": organization_id(self.id), "quotas": self.quotas.to_wire(),
                "operator_quotas": self.operator_quotas.to_wire(), "team_quotas": self.team_quotas.to_wire()}


def _model(r: TeamRow) -> Team:
    return Team(r.id, r.name, r.created_at, Quotas.of(r), Quotas.operator(r), Quotas.own(r))


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

    def show(self, id_or_name: str) -> tuple[Team, Usage]:
        """The team and what its live sandboxes and its templates use now (docs/teams.md#quotas)."""
        team = self.resolve(id_or_name)
        with self.store.tx() as s:
            return team, usage(s, team.id)

    def set_quotas(self, id_or_name: str, changes: dict[str, int | None]) -> Team:
        """The operator sets the quotas named in `changes`; None clears one (no limit). The others stay as they
        are; a team's own lower limits stay too (the lower of the two holds)."""
        _check_quotas(changes)
        team = self.resolve(id_or_name)
        with self.store.tx() as s:
            row = s.get(TeamRow, team.id)
            if row is None:
                raise NotFound(f"team {id_or_name} not found", code="team_not_found")
            for name, value in changes.items():
                setattr(row, name, value)
            return _model(row)

    def set_own_quotas(self, team_id: str, changes: dict[str, int | None]) -> Team:
        """A team admin's limits for its own team, each at most the operator's quota (when there is one); None
        clears one. Lets a team keep, say, its CI key from using all the team may."""
        _check_quotas(changes)
        with self.store.tx() as s:
            row = s.get(TeamRow, team_id)
            if row is None:
                raise NotFound(f"team {team_id} not found", code="team_not_found")
            operator = Quotas.operator(row)
            for name, value in changes.items():
                cap = getattr(operator, name)
                if value is not None and cap is not None and value > cap:
                    raise Invalid(f"{name}: {value} is over the operator's quota of {cap} for this team",
                                  code="over_operator_quota", details={"quota": name, "limit": cap})
            row.team_quotas = {k: v for k, v in {**(row.team_quotas or {}), **changes}.items() if v is not None}
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
            volumes = s.scalar(select(func.count()).select_from(VolumeRow).where(VolumeRow.team_id == team.id)) or 0
            if keys or live or volumes:  # a volume's files would outlive every way to reach them
                raise Conflict(f"team {team.name} still has {keys} key(s), {live} sandbox(es) and {volumes} volume(s)",
                               code="team_not_empty")
            s.delete(s.get(TeamRow, team.id))
        return team


def _check_quotas(changes: dict[str, int | None]) -> None:
    for name, value in changes.items():
        if name not in QUOTAS:
            raise Invalid(f"{name}: no such quota; quotas are {', '.join(QUOTAS)}", code="invalid_quota")
        if value is not None and not (type(value) is int and 0 <= value <= MAX_QUOTA):
            raise Invalid(f"{name}: a quota is an integer 0..{MAX_QUOTA} or null", code="invalid_quota")
