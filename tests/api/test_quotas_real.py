"""Through crun (marked real): a team's quota refuses a create in both dialects, and the memory a HopX create asks
for is the limit the sandbox runs under (docs/teams.md)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from support.server import CPServer


@pytest.fixture(scope="module")
def real(database_url):
    # Not under pytest's 0700 tmp dir: the sandbox's mapped root (uid 100000) must traverse the data dir.
    data = Path(tempfile.mkdtemp(prefix="test-quotas-real-", dir="/tmp"))
    data.chmod(0o755)
    srv = CPServer(data, database_url, backend="crun").start()
    yield srv
    srv.close()
    shutil.rmtree(data, ignore_errors=True)


def _run(real, sb: dict, command: str) -> str:
    r = httpx.post(real.gateway + "/commands/run", headers={"Authorization": f"Bearer {sb['auth_token']}"},
                   json={"command": command}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["stdout"]


@pytest.mark.real
def test_quota_and_asked_memory_on_real_sandboxes(real):
    with real.client() as op:
        assert op.post("/v1/teams", json={"name": "real-q"}).status_code == 201
        key = op.post("/v1/api-keys", json={"name": "m", "team": "real-q"}).json()
        assert op.patch("/v1/teams/real-q", json={"max_sandboxes": 1}).status_code == 200
    with real.client(key["key"]) as member:
        r = member.post("/v1/sandboxes", json={"template_name": "base", "memory_mb": 300, "vcpu": 0.5})
        assert r.status_code == 201, r.text
        sb = r.json()
        try:
            assert sb["resources"]["memory_mb"] == 300
            # cgroup v2 (one hierarchy) or v1 (one per controller), as the host has it
            memory = _run(real, sb, "cat /sys/fs/cgroup/memory.max 2>/dev/null || "
                                    "cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
            assert memory.strip() == str(300 * 1024 * 1024)
            cpu = _run(real, sb, "cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us")
            assert cpu.split()[0] == "50000"  # half of each 100 ms period

            hopx = member.post("/v1/sandboxes", json={"template_name": "base"})
            assert hopx.status_code == 403 and hopx.json()["code"] == "quota_exceeded"
            assert "limit" in hopx.json()["message"]
            assert hopx.json()["details"] == {"quota": "max_sandboxes", "limit": 1, "current": 1}
            e2b = member.post("/sandboxes", json={"templateID": "base"})
            assert e2b.status_code == 429 and e2b.headers["should-retry"] == "false"
            assert "limit of 1 concurrent sandboxes" in e2b.json()["message"]
            assert [s["id"] for s in member.get("/v1/sandboxes").json()["data"]] == [sb["id"]]  # nothing was made
        finally:
            member.delete(f"/v1/sandboxes/{sb['id']}")
