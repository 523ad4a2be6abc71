"""E2B lifecycle events API over HTTP: shape, order, pagination and its 400s."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from sandboxd.core import events as ev
from sandboxd.core.store.tables import SandboxRow

KEYS = {"version", "id", "type", "eventData", "sandboxBuildId", "sandboxExecutionId", "sandboxId", "sandboxTeamId",
        "sandboxTemplateId", "timestamp"}


def add_sandbox(server, sid: str, metadata=None) -> None:
    now = datetime.now(timezone.utc)
    with server.services.store.tx() as s:
        s.add(SandboxRow(id=sid, status="running", template_id="tplev", template_name="base", region="local", node_id="n",
                         vcpu=1.0, memory_mb=1024, disk_mb=2048, internet_access=False, env_vars={}, metadata_=metadata or {},
                         timeout_seconds=60, created_at=now - timedelta(seconds=2), started_at=now - timedelta(seconds=1),
                         token_version=1))


@pytest.fixture(scope="module")
def history(server):
    sid = "sbevents01"
    add_sandbox(server, sid, {"k": "v"})
    log = server.services.events
    meta = {"sandbox_metadata": {"k": "v"}}
    log.record(ev.Event(ev.CREATED, sid, dict(meta), template_id="tplev"))
    for i in range(9):
        log.record(ev.Event(ev.UPDATED, sid, {**meta, "set_timeout": f"2030-01-01T00:00:0{i}Z"}, template_id="tplev"))
    for t in (ev.PAUSED, ev.RESUMED, ev.CHECKPOINTED):
        log.record(ev.Event(t, sid, dict(meta), template_id="tplev"))
    execution = {"started_at": "2030-01-01T00:00:00Z", "vcpu_count": 1, "memory_mb": 1024, "execution_time": 1500}
    log.record(ev.Event(ev.KILLED, sid, {**meta, "kill_reason": "timeout", "execution": execution, "status": "killed"},
                        template_id="tplev"))
    return sid


def test_newest_first_by_default_with_the_seed_shape(server, history):
    r = server.client.get(f"/events/sandboxes/{history}")
    assert r.status_code == 200
    events = r.json()
    assert len(events) == 10
    first = events[0]
    assert KEYS <= set(first)
    assert first["type"] == ev.KILLED and first["sandboxId"] == history and first["sandboxTemplateId"] == "tplev"
    assert first["eventData"]["kill_reason"] == "timeout"
    assert first["eventData"]["execution"]["execution_time"] == 1500
    assert first["eventData"]["sandbox_metadata"] == {"k": "v"} and "status" not in first["eventData"]
    uuid.UUID(first["id"])
    datetime.strptime(first["timestamp"], "%Y-%m-%dT%H:%M:%SZ")
    assert [e["type"] for e in events[:4]] == [ev.KILLED, ev.CHECKPOINTED, ev.RESUMED, ev.PAUSED]
    assert len({e["sandboxExecutionId"] for e in events}) == 1


def test_order_asc_offset_and_limit(server, history):
    c = server.client
    asc = c.get(f"/events/sandboxes/{history}", params={"orderAsc": "true", "limit": 100}).json()
    assert len(asc) == 14 and asc[0]["type"] == ev.CREATED and asc[-1]["type"] == ev.KILLED
    assert asc[1]["eventData"]["set_timeout"] == "2030-01-01T00:00:00Z"
    page = c.get(f"/events/sandboxes/{history}", params={"orderAsc": "true", "offset": 10, "limit": 3}).json()
    assert [e["id"] for e in page] == [e["id"] for e in asc[10:13]]
    assert c.get(f"/events/sandboxes/{history}", params={"offset": 14}).json() == []
    assert c.get(f"/events/sandboxes/{history}", params={"limit": 1}).json()[0]["id"] == asc[-1]["id"]
    team = c.get("/events/sandboxes", params={"limit": 100}).json()
    assert {e["id"] for e in asc} <= {e["id"] for e in team}


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"limit": "ten"}, {"offset": -1}, {"offset": "x"}, {"offset": 10**20},
                                    {"orderAsc": "maybe"}])
def test_out_of_range_parameters_are_400_not_clamped(server, history, params):
    for path in (f"/events/sandboxes/{history}", "/events/sandboxes"):
        r = server.client.get(path, params=params)
        assert r.status_code == 400, (path, params, r.text)
        assert r.json()["code"] == 400 and r.json()["error_code"] == "invalid_request"  # E2B's error body


def test_unknown_sandbox_is_404(server):
    assert server.client.get("/events/sandboxes/sbnosuchthing").status_code == 404
