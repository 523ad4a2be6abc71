"""Through crun (marked real): the host admits sandboxes while their memory limits fit the operator's
overcommit, each one gets exactly its template's limit in its cgroup, a refused create leaves nothing
running, and a kill gives the room back."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest


from support.server import CPServer
from test_limits_api import BUILD, e2b_create, live, mem_total_mb  # noqa: E402

TEMPLATES = os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates")


def run(srv, sb, command):
    r = httpx.post(srv.gateway + "/commands/run", json={"command": command, "timeout": 30},
                   headers={"Authorization": f"Bearer {sb['auth_token']}"}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["stdout"].strip()


@pytest.mark.real
def test_admission_and_ceilings_through_crun():
    data = Path(tempfile.mkdtemp(prefix="limits-real-", dir="/tmp"))
    data.chmod(0o755)
    ratio = 1.5 * 1024 / mem_total_mb()  # one base sandbox (1024 MB) fits, two do not
    srv = CPServer(data, None, SANDBOXD_BACKEND="crun", SANDBOXD_TEMPLATES_PATH=TEMPLATES,
                   SANDBOXD_MEMORY_OVERCOMMIT=repr(ratio), SANDBOXD_MAX_SANDBOX_MEMORY_MB="2048").start()
    try:
        with srv.client() as c:
            r = c.post("/v1/templates/build", json={**BUILD, "name": "limits-real", "memory": 4096})
            assert r.status_code == 400 and r.json()["details"]["limit"] == 2048
            first = c.post("/v1/sandboxes", json={"template_name": "base"})
            assert first.status_code == 201, first.text
            sb = first.json()
            limit = run(srv, sb, "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null")
            assert limit == str(1024 * 1024 * 1024), limit  # cgroup v2 or v1, whichever the host has
            r = c.post("/v1/sandboxes", json={"template_name": "base"})
            assert r.status_code == 503 and r.json()["code"] == "host_capacity_exceeded", r.text
            r = e2b_create(srv)
            assert r.status_code == 503 and r.headers["Retry-After"] == "10"
            assert [s["id"] for s in live(c)] == [sb["id"]]
            assert run(srv, sb, "echo still") == "still"  # the refusals touched nothing that runs
            assert c.delete(f"/v1/sandboxes/{sb['id']}").status_code in (200, 204)
            again = c.post("/v1/sandboxes", json={"template_name": "base"})
            assert again.status_code == 201, again.text
            assert run(srv, again.json(), "echo room") == "room"
            c.delete(f"/v1/sandboxes/{again.json()['id']}")
    finally:
        srv.close()
        shutil.rmtree(data, ignore_errors=True)
