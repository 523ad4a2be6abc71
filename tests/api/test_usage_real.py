"""Through crun (marked real): a sandbox created, paused, resumed and killed is billed the running time its own
events in the store add up to."""
from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from support.real import TEMPLATES_DIR
from support.server import CPServer


@pytest.fixture(scope="module")
def real():
    # Not under pytest's 0700 tmp dir: the sandbox's mapped root (uid 100000) must traverse the data dir.
    data = Path(tempfile.mkdtemp(prefix="test-usage-", dir="/tmp"))
    data.chmod(0o755)
    srv = CPServer(data, None, SANDBOXD_BACKEND="crun", SANDBOXD_TEMPLATES_PATH=str(TEMPLATES_DIR)).start()
    yield srv
    srv.close()
    shutil.rmtree(data, ignore_errors=True)


def stored_events(data_dir: Path, sid: str) -> list[tuple[str, datetime]]:
    with sqlite3.connect(data_dir / "sandboxd.db") as db:
        rows = db.execute("select type, timestamp from events where sandbox_id = ? order by id", (sid,)).fetchall()
    return [(t.rsplit(".", 1)[-1], datetime.fromisoformat(ts).replace(tzinfo=timezone.utc)) for t, ts in rows]


@pytest.mark.real
def test_usage_is_the_running_time_of_the_sandboxs_events(real):
    with real.client() as c:
        r = c.post("/v1/sandboxes", json={"template_name": "base"})
        assert r.status_code == 201, r.text
        sb = r.json()
        sid = sb["id"]
        try:
            assert c.post(f"/v1/sandboxes/{sid}/pause").status_code == 200
            time.sleep(2)  # paused longer than the tolerance: counting paused time would show
            assert c.post(f"/v1/sandboxes/{sid}/resume").status_code == 200
        finally:
            assert c.delete(f"/v1/sandboxes/{sid}").status_code == 200
        events = stored_events(real.data_dir, sid)
        assert [t for t, _ in events] == ["created", "paused", "resumed", "killed"]
        (_, created), (_, paused), (_, resumed), (_, killed) = events
        ran = ((paused - created) + (killed - resumed)).total_seconds()
        since = (created - timedelta(minutes=1)).isoformat()
        r = c.get("/v1/usage", params={"sandbox_id": sid, "from": since})
        assert r.status_code == 200, r.text
        [team] = r.json()["teams"]
        [got] = team["sandboxes"]
    vcpu, memory_mb = sb["resources"]["vcpu"], sb["resources"]["memory_mb"]
    assert got["sandbox_id"] == sid and team["sandbox_seconds"] == got["sandbox_seconds"]
    assert got["sandbox_seconds"] == pytest.approx(ran, abs=1)
    assert got["vcpu_seconds"] == pytest.approx(ran * vcpu, abs=vcpu)
    assert got["gib_seconds"] == pytest.approx(ran * memory_mb / 1024, abs=memory_mb / 1024)
