"""Usage accounting from hand-made lifecycle events (SQLite and PostgreSQL): running time only, clipped to
the window, per sandbox and per team, scoped like every team resource."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sandboxd.core import events as ev
from sandboxd.core.store import db
from sandboxd.core.store.db import Store
from sandboxd.core.store.tables import EventRow, SandboxRow, TeamRow
from sandboxd.core.usage import UsageService, parse_time, running_intervals, window
from sandboxd.errors import Invalid, NotFound

T = datetime(2026, 11, 1, tzinfo=timezone.utc)
NOW = T + timedelta(seconds=1000)
STATUS = {ev.CREATED: "running", ev.RESUMED: "running", ev.PAUSED: "paused", ev.KILLED: "killed"}


def at(seconds: float) -> datetime:
    return T + timedelta(seconds=seconds)


# (sandbox, team, vcpu, memory_mb): [(type, seconds after T, status for an update)]
SANDBOXES = {
    ("sbpaused", "team_a", 2.0, 2048): [(ev.CREATED, 0, None), (ev.PAUSED, 100, None), (ev.RESUMED, 300, None),
                                        (ev.KILLED, 400, None)],
    ("sbstill", "team_a", 1.0, 512): [(ev.CREATED, 50, None)],
    ("sbkilledpaused", "team_b", 1.0, 1024): [(ev.CREATED, 0, None), (ev.PAUSED, 60, None), (ev.KILLED, 500, None)],
    # Entered the window running: its last event before the window is a timeout change.
    ("sbolder", "team_b", 4.0, 4096): [(ev.CREATED, -1000, None), (ev.UPDATED, -500, "running"),
                                       (ev.PAUSED, 10, None)],
    # A filesystem-only pause is a stop (an update to stopped); starting it again is an update to running.
    ("sbstopped", "team_b", 1.0, 1024): [(ev.CREATED, 0, None), (ev.UPDATED, 20, "stopped"),
                                         (ev.UPDATED, 40, "running"), (ev.KILLED, 50, None)],
    ("sbgone", "team_a", 1.0, 1024): [(ev.CREATED, -900, None), (ev.KILLED, -800, None)],
}


@pytest.fixture
def usage(db_url):
    store = Store(db.make_engine(db_url))
    db.upgrade(store.engine)
    with store.tx() as s:
        s.add_all([TeamRow(id="team_a", name="alpha", created_at=at(-2000)),
                   TeamRow(id="team_b", name="beta", created_at=at(-2000))])
        for (sid, team, vcpu, mem), changes in SANDBOXES.items():
            ended = [at(sec) for t, sec, _ in changes if t == ev.KILLED]
            s.add(SandboxRow(id=sid, status="killed" if ended else "running", template_id="tpl_base",
                             template_name="base", vcpu=vcpu, memory_mb=mem, disk_mb=1024, created_at=at(changes[0][1]),
                             started_at=at(changes[0][1]), ended_at=ended[0] if ended else None, team_id=team))
            for etype, sec, status in changes:
                s.add(EventRow(type=etype, sandbox_id=sid, template_id="tpl_base", timestamp=at(sec),
                               data={"status": status or STATUS[etype], "template_id": "tpl_base"}))
        # Not sandbox events: a template's, and one of a sandbox the table does not hold.
        s.add(EventRow(type="template.created", sandbox_id=None, timestamp=at(5), data={}))
        s.add(EventRow(type=ev.CREATED, sandbox_id="sbunknown", timestamp=at(5), data={"status": "running"}))
    yield UsageService(store)
    store.engine.dispose()


def seconds_of(report) -> dict[str, float]:
    return {s["sandbox_id"]: s["sandbox_seconds"] for t in report.to_wire()["teams"] for s in t["sandboxes"]}


def test_running_time_per_sandbox_and_team(usage):
    report = usage.report(T, NOW, now=NOW).to_wire()
    assert seconds_of(usage.report(T, NOW, now=NOW)) == {
        "sbpaused": 200, "sbstill": 950, "sbkilledpaused": 60, "sbolder": 10, "sbstopped": 30}
    assert (report["from"], report["to"]) == ("2026-11-01T00:00:00.000000Z", "2026-11-01T00:16:40.000000Z")
    a, b = report["teams"]
    assert (a["team_id"], a["team_name"], b["team_name"]) == ("team_a", "alpha", "beta")
    assert (a["sandbox_seconds"], a["vcpu_seconds"], a["gib_seconds"]) == (1150, 200 * 2 + 950, 200 * 2 + 950 / 2)
    assert (b["sandbox_seconds"], b["vcpu_seconds"], b["gib_seconds"]) == (100, 60 + 40 + 30, 60 + 40 + 30)
    assert [s["sandbox_id"] for s in a["sandboxes"]] == ["sbstill", "sbpaused"]  # most used first
    assert a["sandboxes"][1] == {"sandbox_id": "sbpaused", "template_id": "tpl_base", "sandbox_seconds": 200,
                                 "vcpu_seconds": 400, "gib_seconds": 400, "vcpu": 2.0, "memory_mb": 2048}


def test_the_window_clips_intervals(usage):
    # [T+80, T+350): sbpaused ran 80..100 and 300..350; sbstill 80..350; sbolder had paused at T+10.
    assert seconds_of(usage.report(at(80), at(350), now=NOW)) == {"sbpaused": 70, "sbstill": 270}
    # Paused across the whole window: nothing; one that ended before it: nothing.
    assert seconds_of(usage.report(at(120), at(280), now=NOW)) == {"sbstill": 160}
    assert seconds_of(usage.report(at(-850), at(-820), now=NOW)) == {"sbgone": 30, "sbolder": 30}


def test_a_running_sandbox_counts_up_to_now_not_to_a_later_end(usage):
    assert seconds_of(usage.report(at(900), at(5000), now=NOW)) == {"sbstill": 100}


def test_the_calendars_ends_are_windows_too(usage):
    everything = seconds_of(usage.report(datetime(1, 1, 1, tzinfo=timezone.utc),
                                         datetime(9999, 12, 31, tzinfo=timezone.utc), now=NOW))
    assert everything == {"sbpaused": 200, "sbstill": 950, "sbkilledpaused": 60, "sbolder": 1010, "sbstopped": 30,
                          "sbgone": 100}


def test_team_and_sandbox_filters_and_scope(usage):
    only_b = usage.report(T, NOW, team="beta", now=NOW).to_wire()["teams"]
    assert [t["team_id"] for t in only_b] == ["team_b"]
    assert usage.report(T, NOW, team="team_b", scope="team_b", now=NOW).to_wire()["teams"] == only_b
    mine = usage.report(T, NOW, scope="team_a", now=NOW).to_wire()["teams"]
    assert [t["team_id"] for t in mine] == ["team_a"] and mine[0]["sandbox_seconds"] == 1150
    one = usage.report(T, NOW, sandbox_id="sbpaused", now=NOW).to_wire()["teams"]
    assert [(t["team_id"], [s["sandbox_id"] for s in t["sandboxes"]]) for t in one] == [("team_a", ["sbpaused"])]
    for team in ("beta", "team_b", "nosuch"):
        with pytest.raises(NotFound) as e:
            usage.report(T, NOW, team=team, scope="team_a", now=NOW)
        assert (e.value.code, e.value.message) == ("team_not_found", f"team {team} not found")
    for sid in ("sbolder", "sbnosuch"):
        with pytest.raises(NotFound) as e:
            usage.report(T, NOW, sandbox_id=sid, scope="team_a", now=NOW)
        assert e.value.code == "sandbox_not_found"


def test_the_asked_or_own_team_is_listed_even_without_usage(usage):
    teams = usage.report(at(-5000), at(-4000), team="alpha", now=NOW).to_wire()["teams"]
    assert teams == [{"team_id": "team_a", "team_name": "alpha", "sandbox_seconds": 0, "vcpu_seconds": 0,
                      "gib_seconds": 0, "sandboxes": []}]
    own = usage.report(at(-5000), at(-4000), scope="team_b", now=NOW).to_wire()["teams"]
    assert [(t["team_name"], t["sandbox_seconds"]) for t in own] == [("beta", 0)]
    assert usage.report(at(-5000), at(-4000), now=NOW).to_wire()["teams"] == []


def test_intervals_of_one_sandbox():
    changes = [(at(0), True), (at(5), None), (at(10), False), (at(10), False), (at(20), True), (at(25), True)]
    assert list(running_intervals(changes, at(2), at(30))) == [(at(2), at(10)), (at(20), at(30))]
    assert list(running_intervals([(at(0), False), (at(40), True)], at(0), at(30))) == []


def test_times_and_windows():
    assert parse_time("2026-11-01T01:00:00+01:00", "from") == T
    assert parse_time("2026-11-01T01:00:00 01:00", "from") == T  # '+' sent unencoded in a query
    assert parse_time("2026-11-01", "from") == T
    assert parse_time("2026-11-01T00:00:00Z", "from") == T
    assert parse_time(None, "from") is None
    for bad in ("yesterday", "9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+05:00"):
        with pytest.raises(Invalid) as e:
            parse_time(bad, "from")
        assert (e.value.code, e.value.details) == ("invalid_time", {"field": "from"})
    assert window(None, None, NOW) == (NOW - timedelta(days=30), NOW)
    assert window(None, T, NOW) == (T - timedelta(days=30), T)
    assert window(T, None, NOW) == (T, NOW)
    for start, end in ((T, T), (NOW, T), (at(2000), None)):
        with pytest.raises(Invalid) as e:
            window(start, end, NOW)
        assert e.value.code == "invalid_window"
    with pytest.raises(Invalid):
        window(None, datetime(1, 1, 2, tzinfo=timezone.utc), NOW)
