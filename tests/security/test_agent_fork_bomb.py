"""A command's timeout ends everything the command started, also what left its process group: a fork
bomb under `setsid`, bounded by the sandbox's pids limit. While the limit is exhausted `/health` says
the sandbox is not ready (503 unhealthy) and a new command is a clear 503, never a traceback; after the
timeout nothing of the bomb remains and the next command runs."""
from __future__ import annotations

import threading

import httpx
import pytest

from support.runtime import spec
from sandboxd.runtime.base import Resources

pytestmark = pytest.mark.real

PIDS = 64
# Every process forks for ever and outlives a refused fork: the bomb does not die out by itself.
BOMB = ("setsid python3 -c 'import os, time\nwhile True:\n    try:\n        os.fork()\n"
        "    except OSError:\n        time.sleep(0.05)\n' ; sleep 1000")


@pytest.fixture(scope="module")
def agent(rt_env):
    _, sb, image = rt_env
    b = sb.create(spec(image, "bomb", resources=Resources(vcpu=1.0, memory_mb=512, disk_mb=256, pids=PIDS)))
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(b.agent_socket)), base_url="http://agent", timeout=120) as c:
        yield c
    sb.destroy(b.id)


def _processes(c: httpx.Client) -> list[str]:
    r = c.post("/commands/run", json={"command": "sh", "args": ["-c", "for p in /proc/[0-9]*; do cat $p/comm; done"],
                                      "timeout": 30})
    assert r.status_code == 200, r.text
    return r.json()["stdout"].split()


def test_a_setsid_fork_bomb_ends_with_its_command_and_health_tells_meanwhile(agent):
    before = _processes(agent)
    result: dict = {}

    def bomb():
        result["r"] = agent.post("/commands/run", json={"command": "sh", "args": ["-c", BOMB], "timeout": 8})

    t = threading.Thread(target=bomb)
    t.start()
    seen_unhealthy = refused = None
    for _ in range(400):  # polls until the bomb fills the pids limit (it does in well under the timeout)
        h = agent.get("/health")
        if h.status_code == 503:
            seen_unhealthy = h.json()
            break
    if seen_unhealthy is not None:
        r = agent.post("/commands/run", json={"command": "true"})
        refused = (r.status_code, r.json())
    t.join()
    assert seen_unhealthy is not None and seen_unhealthy["status"] == "unhealthy"
    assert refused is not None and (refused[0] == 503 or refused[0] == 200), refused  # 200 if the bomb just died
    if refused[0] == 503:
        assert "process limit" in refused[1]["message"], refused
    r = result["r"]
    assert r.status_code == 200 and r.json()["exit_code"] == 124, r.text
    assert agent.get("/health").json()["status"] == "healthy"
    after = _processes(agent)
    assert after.count("sh") <= before.count("sh") + 1, after  # the listing's own sh; no bomb left
    assert "sleep" not in after and "python3" not in after, after
