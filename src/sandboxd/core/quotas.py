"""Team quotas (docs/teams.md#quotas): limits the operator sets per team, checked in the transaction that stores a
new sandbox (or starts a stopped one), so concurrent creates in the event loop are counted one after the other.

What counts, per team:
- sandboxes and disk_mb: every live sandbox, stopped ones too (a stopped sandbox keeps its disk and comes back
  with `start`);
- vcpu and memory_mb: the sandboxes that hold them (creating, running, paused: a paused one keeps its memory);
  a stopped one holds none, so starting it is checked against these two again;
- creates per minute: the team's sandboxes created in the last 60 s, whatever became of them.
A null quota is no limit. Templates (`max_templates`) are counted here for the usage report; the catalog
enforces that one when a team makes a new template (a build, an announced build or a snapshot).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from sandboxd.core.catalog import team_templates
from sandboxd.core.models import CREATING, LIVE_STATES, PAUSED, RUNNING
from sandboxd.core.store.tables import SandboxRow, TeamRow, VolumeRow
from sandboxd.errors import QuotaExceeded

HOLDING = (CREATING, RUNNING, PAUSED)  # the states whose sandboxes hold vCPU and memory
WINDOW = timedelta(seconds=60)
MAX_QUOTA = 2**31 - 1  # the columns are 32-bit integers


@dataclass(frozen=True)
class Quotas:
    max_sandboxes: int | None = None
    max_vcpu: int | None = None
    max_memory_mb: int | None = None
    max_disk_mb: int | None = None
    max_templates: int | None = None
    max_creates_per_minute: int | None = None

    @classmethod
    def operator(cls, row: TeamRow) -> "Quotas":
        """The limits the operator set for the team."""
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})

    @classmethod
    def own(cls, row: TeamRow) -> "Quotas":
        """The limits the team's admin set for it (never above the operator's)."""
        mine = row.team_quotas or {}
        return cls(**{f.name: mine.get(f.name) for f in fields(cls)})

    @classmethod
    def of(cls, row: TeamRow) -> "Quotas":
        """What holds: the lower of the operator's and the team's own limit, quota by quota."""
        op, own = cls.operator(row), cls.own(row)
        return cls(**{f.name: _lower(getattr(op, f.name), getattr(own, f.name)) for f in fields(cls)})

    def to_wire(self) -> dict[str, int | None]:
        return asdict(self)


FIELDS = tuple(f.name for f in fields(Quotas))


@dataclass(frozen=True)
class Usage:
    sandboxes: int = 0
    vcpu: float = 0.0
    memory_mb: int = 0
    disk_mb: int = 0
    templates: int = 0
    volumes: int = 0  # how many it has (core/volumes.py); their bytes are not counted

    def to_wire(self) -> dict[str, int | float]:
        return {**asdict(self), "vcpu": _plain(self.vcpu)}


def usage(s: Session, team_id: str) -> Usage:
    holds = SandboxRow.status.in_(HOLDING)
    n, vcpu, mem, disk = s.execute(
        select(func.count(), func.coalesce(func.sum(case((holds, SandboxRow.vcpu), else_=0)), 0),
               func.coalesce(func.sum(case((holds, SandboxRow.memory_mb), else_=0)), 0),
               func.coalesce(func.sum(SandboxRow.disk_mb), 0))
        .where(SandboxRow.team_id == team_id, SandboxRow.status.in_(LIVE_STATES))).one()
    templates = team_templates(s, team_id)
    volumes = s.scalar(select(func.count()).select_from(VolumeRow).where(VolumeRow.team_id == team_id)) or 0
    return Usage(int(n), float(vcpu), int(mem), int(disk), int(templates), int(volumes))


def check_create(s: Session, team_id: str, *, vcpu: float, memory_mb: int, disk_mb: int, now: datetime) -> None:
    """Raise QuotaExceeded if one more sandbox with these limits would take the team over a quota."""
    team = s.get(TeamRow, team_id)
    if team is None:
        return
    q = Quotas.of(team)
    if q == Quotas():
        return  # no quota: spare the queries
    # Control planes sharing a PostgreSQL database then count this team's creates one after the other too
    # (SQLite has no row locks; its writers are serialised anyway).
    s.refresh(team, with_for_update=True)
    q = Quotas.of(team)
    if q.max_creates_per_minute is not None:
        recent = s.scalar(select(func.count()).select_from(SandboxRow).where(
            SandboxRow.team_id == team_id, SandboxRow.created_at > now - WINDOW)) or 0
        if recent >= q.max_creates_per_minute:
            raise QuotaExceeded(
                f"team {team.name} has reached its limit of {q.max_creates_per_minute} sandbox creates per minute "
                f"({recent} in the last 60 s); wait before creating another",
                details={"quota": "max_creates_per_minute", "limit": q.max_creates_per_minute, "current": recent})
    use = usage(s, team_id)
    if q.max_sandboxes is not None and use.sandboxes + 1 > q.max_sandboxes:
        raise QuotaExceeded(
            f"team {team.name} has reached its limit of {q.max_sandboxes} concurrent sandboxes "
            f"({use.sandboxes} live); kill one or ask the operator to raise it",
            details={"quota": "max_sandboxes", "limit": q.max_sandboxes, "current": use.sandboxes})
    _check_sizes(team, q, use, vcpu=vcpu, memory_mb=memory_mb, disk_mb=disk_mb)


def check_start(s: Session, team_id: str | None, *, vcpu: float, memory_mb: int, starting: Usage) -> None:
    """A stopped sandbox starting again takes vCPU and memory back; `starting`: other starts of the team under
    way, not yet counted by their rows."""
    team = s.get(TeamRow, team_id) if team_id else None
    if team is None:
        return
    q = Quotas.of(team)
    if q.max_vcpu is None and q.max_memory_mb is None:
        return
    use = usage(s, team.id)
    use = Usage(use.sandboxes, use.vcpu + starting.vcpu, use.memory_mb + starting.memory_mb, use.disk_mb)
    _check_sizes(team, q, use, vcpu=vcpu, memory_mb=memory_mb, disk_mb=0)


def _check_sizes(team: TeamRow, q: Quotas, use: Usage, *, vcpu: float, memory_mb: int, disk_mb: int) -> None:
    for quota, limit, current, asked, unit in (("max_vcpu", q.max_vcpu, use.vcpu, vcpu, "vCPU"),
                                               ("max_memory_mb", q.max_memory_mb, use.memory_mb, memory_mb, "MB of memory"),
                                               ("max_disk_mb", q.max_disk_mb, use.disk_mb, disk_mb, "MB of disk")):
        if limit is not None and asked and current + asked > limit:
            current, asked = _plain(current), _plain(asked)
            raise QuotaExceeded(
                f"team {team.name} has a limit of {limit} {unit} across its sandboxes: {current} in use, "
                f"this sandbox needs {asked} more",
                details={"quota": quota, "limit": limit, "current": current})


def _lower(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _plain(x: float) -> int | float:
    return int(x) if float(x).is_integer() else round(x, 3)
