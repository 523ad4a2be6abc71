"""Usage accounting (docs/teams.md "Usage"): how long each sandbox ran in a window, summed per team.

Running time only, as E2B bills it: an interval opens at `created`, `resumed` or a start after a stop, and
closes at `paused`, a stop or `killed`; a sandbox still running closes at the window's end (or now). A paused
sandbox still holds its memory, but paused and stopped time are not counted. Every lifecycle event records
the status it left the sandbox in (core/lifecycle.py), which is all the arithmetic needs.

One query reads the window's events plus, for each sandbox alive when the window opens, its last event
before it (the state it entered the window in); the intervals are computed here, clipped to the window.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, func, or_, select

from sandboxd.core import events as ev
from sandboxd.core.models import KILLED, PAUSED, RUNNING, STOPPED, iso
from sandboxd.core.store.db import Store
from sandboxd.core.store.tables import EventRow, SandboxRow, TeamRow
from sandboxd.errors import Invalid, NotFound

DEFAULT_WINDOW = timedelta(days=30)
# A kill stores ended_at a moment before its event's timestamp: a sandbox that ended this shortly before the
# window opened may still have its killed event inside it, and its state before is needed to close it.
ENDED_SLACK = timedelta(minutes=1)
EARLIEST = datetime.min.replace(tzinfo=timezone.utc) + ENDED_SLACK
GIB_MB = 1024

_OPENS = {ev.CREATED, ev.RESUMED}
_CLOSES = {ev.PAUSED, ev.KILLED}
_STATUS_RUNNING = {RUNNING: True, PAUSED: False, STOPPED: False, KILLED: False}


def runs(etype: str, data: dict[str, Any] | None) -> bool | None:
    """Whether the sandbox runs after this event; None when the event changes nothing we can tell."""
    if etype in _OPENS:
        return True
    if etype in _CLOSES:
        return False
    status = (data or {}).get("status")
    return _STATUS_RUNNING.get(status) if isinstance(status, str) else None


def running_intervals(changes: Iterable[tuple[datetime, bool | None]], start: datetime, end: datetime
                      ) -> Iterator[tuple[datetime, datetime]]:
    """The running intervals of one sandbox within [start, end), from its (time, runs after) changes in
    time order; the first may lie before `start` (the state the sandbox entered the window in)."""
    since: datetime | None = None
    for when, running in changes:
        if running is True and since is None:
            since = when
        elif running is False and since is not None:
            yield from _clip(since, when, start, end)
            since = None
    if since is not None:
        yield from _clip(since, end, start, end)


def _clip(a: datetime, b: datetime, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
    a, b = max(a, start), min(b, end)
    if b > a:
        yield a, b


@dataclass
class SandboxUsage:
    sandbox_id: str
    template_id: str | None
    vcpu: float
    memory_mb: int
    seconds: float = 0.0

    @property
    def vcpu_seconds(self) -> float:
        return self.seconds * self.vcpu

    @property
    def gib_seconds(self) -> float:
        return self.seconds * self.memory_mb / GIB_MB

    def to_wire(self) -> dict:
        return {"sandbox_id": self.sandbox_id, "template_id": self.template_id, **_amounts(
            self.seconds, self.vcpu_seconds, self.gib_seconds), "vcpu": self.vcpu, "memory_mb": self.memory_mb}


@dataclass
class TeamUsage:
    team_id: str | None
    team_name: str | None
    sandboxes: list[SandboxUsage] = field(default_factory=list)

    def to_wire(self) -> dict:
        sums = [sum(getattr(s, k) for s in self.sandboxes) for k in ("seconds", "vcpu_seconds", "gib_seconds")]
        return {"team_id": self.team_id, "team_name": self.team_name, **_amounts(*sums),
                "sandboxes": [s.to_wire() for s in self.sandboxes]}


def _amounts(seconds: float, vcpu_seconds: float, gib_seconds: float) -> dict:
    return {"sandbox_seconds": round(seconds, 3), "vcpu_seconds": round(vcpu_seconds, 3),
            "gib_seconds": round(gib_seconds, 3)}


@dataclass
class UsageReport:
    start: datetime
    end: datetime
    teams: list[TeamUsage]

    def to_wire(self) -> dict:
        return {"object": "usage", "from": iso(self.start), "to": iso(self.end),
                "teams": [t.to_wire() for t in self.teams]}


def parse_time(value: str | None, name: str) -> datetime | None:
    """An ISO 8601 time from a query string (a date alone is its midnight); naive times are UTC."""
    if value is None or value == "":
        return None
    for text in (value, value[::-1].replace(" ", "+", 1)[::-1]):  # an unencoded '+' arrives as a space
        try:
            when = datetime.fromisoformat(text)
            return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
        except (ValueError, OverflowError):  # OverflowError: an offset that moves it out of the calendar
            continue
    raise Invalid(f"{name} is not an ISO 8601 time: {value!r}", code="invalid_time", details={"field": name})


def window(start: datetime | None, end: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """[start, end): `end` defaults to now, `start` to 30 days before `end`."""
    end = end or now
    try:
        start = start or end - DEFAULT_WINDOW
    except OverflowError:
        raise Invalid("the window lies outside the calendar", code="invalid_window") from None
    if start >= end:
        raise Invalid("from must be before to", code="invalid_window",
                      details={"from": iso(start), "to": iso(end)})
    return start, end


class UsageService:
    def __init__(self, store: Store):
        self.store = store

    def report(self, start: datetime | None = None, end: datetime | None = None, *, team: str | None = None,
               sandbox_id: str | None = None, scope: str | None = None, now: datetime | None = None
               ) -> UsageReport:
        """`team`: a team's id or name; `scope`: the caller's team (None: the operator, every team). Another
        team's team or sandbox answers exactly like a missing one."""
        now = now or datetime.now(timezone.utc)
        start, end = window(start, end, now)
        with self.store.tx() as s:
            # The team asked for, or the caller's own, is listed even when it used nothing.
            team_id = self._team(s, team, scope) or scope
            if sandbox_id is not None:
                self._sandbox(s, sandbox_id, scope)
            rows = s.execute(_events_query(start, end, team_id, sandbox_id)).all()
            per_sandbox = _tally(rows, start, min(end, now))
            teams = {t.id: t.name for t in s.scalars(select(TeamRow).where(
                TeamRow.id.in_({team_id, *(u[0] for u in per_sandbox.values())} - {None})))}
        by_team: dict[str | None, TeamUsage] = {}
        if team_id is not None:
            by_team[team_id] = TeamUsage(team_id, teams.get(team_id))
        for owner, usage in per_sandbox.values():
            by_team.setdefault(owner, TeamUsage(owner, teams.get(owner or ""))).sandboxes.append(usage)
        for t in by_team.values():
            t.sandboxes.sort(key=lambda u: (-u.seconds, u.sandbox_id))
        return UsageReport(start, end, sorted(by_team.values(), key=lambda t: (t.team_name or "", t.team_id or "")))

    @staticmethod
    def _team(s, ref: str | None, scope: str | None) -> str | None:
        if ref is None:
            return None
        row = s.get(TeamRow, ref) or s.scalar(select(TeamRow).where(TeamRow.name == ref))
        if row is None or scope not in (None, row.id):
            raise NotFound(f"team {ref} not found", code="team_not_found")
        return row.id

    @staticmethod
    def _sandbox(s, sid: str, scope: str | None) -> None:
        row = s.get(SandboxRow, sid)
        if row is None or scope not in (None, row.team_id):
            raise NotFound(f"sandbox {sid} not found", code="sandbox_not_found")


def _events_query(start: datetime, end: datetime, team_id: str | None, sandbox_id: str | None):
    alive_at_start = select(SandboxRow.id).where(
        SandboxRow.created_at < start,
        or_(SandboxRow.ended_at.is_(None), SandboxRow.ended_at >= max(start, EARLIEST) - ENDED_SLACK))
    last_before = (select(func.max(EventRow.id))
                   .where(EventRow.timestamp < start, EventRow.type.in_(ev.LIFECYCLE_TYPES),
                          EventRow.sandbox_id.in_(alive_at_start))
                   .group_by(EventRow.sandbox_id))
    q = (select(EventRow.sandbox_id, EventRow.type, EventRow.timestamp, EventRow.data, SandboxRow.team_id,
                SandboxRow.template_id, SandboxRow.vcpu, SandboxRow.memory_mb)
         .join(SandboxRow, SandboxRow.id == EventRow.sandbox_id)
         .where(EventRow.type.in_(ev.LIFECYCLE_TYPES),
                or_(and_(EventRow.timestamp >= start, EventRow.timestamp < end), EventRow.id.in_(last_before))))
    if team_id is not None:
        q = q.where(SandboxRow.team_id == team_id)
    if sandbox_id is not None:
        q = q.where(EventRow.sandbox_id == sandbox_id)
    return q.order_by(EventRow.sandbox_id, EventRow.timestamp, EventRow.id)


def _tally(rows, start: datetime, end: datetime) -> dict[str, tuple[str | None, SandboxUsage]]:
    """Rows grouped by sandbox (the query orders them so) → (team, usage) of each sandbox that ran."""
    out: dict[str, tuple[str | None, SandboxUsage]] = {}
    changes: list[tuple[datetime, bool | None]] = []
    for i, r in enumerate(rows):
        changes.append((r.timestamp, runs(r.type, r.data)))
        if i + 1 < len(rows) and rows[i + 1].sandbox_id == r.sandbox_id:
            continue
        seconds = sum((b - a).total_seconds() for a, b in running_intervals(changes, start, end))
        changes = []
        if seconds > 0:
            out[r.sandbox_id] = (r.team_id, SandboxUsage(r.sandbox_id, r.template_id, r.vcpu, r.memory_mb, seconds))
    return out
