"""destroy(background=True), the path of a user's kill: it returns once every process of the sandbox has been
sent SIGKILL; mounts, loop disk, cgroup, network and files go on a task that close()/drain() wait for, and that
recover() finishes when the daemon died first."""
from __future__ import annotations

import os
import time

import pytest

from support.runtime import SyncBackend, leftovers, spec
from sandboxd.runtime.cgroups import SandboxCgroup
from sandboxd.runtime import agentclient
from sandboxd.runtime.oci.backend import OciBackend
from sandboxd.runtime.oci.state import Record

pytestmark = pytest.mark.real


def _running(pid: int) -> bool:
    """True when pid still exists and is not on its way out (a SIGKILLed task can take a moment to exit)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rpartition(")")[2].split()[0]
        with open(f"/proc/{pid}/status") as fh:  # it may exit between the two reads
            pending = next((l for l in fh if l.startswith("SigPnd:") or l.startswith("ShdPnd:")), "")
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X") and not (int(pending.split()[1], 16) & (1 << 8) if pending else False)


@pytest.mark.parametrize("paused", [False, True], ids=["running", "paused"])
def test_background_destroy_kills_now_and_releases_later(rt_env, paused):
    settings, sb, image = rt_env
    box = sb.create(spec(image, "bgkill"))
    sb.sh(box.id, "(sleep 300 & sleep 300 &) >/dev/null 2>&1 </dev/null; true")
    pids = SandboxCgroup(box.id, sb.backend.layout).pids()
    assert len(pids) >= 4
    if paused:
        sb.pause(box.id)
    sb.destroy(box.id, background=True)
    # Nothing of it may run any more, and the runtime no longer reports it.
    assert sb.state(box.id) is None
    deadline = time.monotonic() + 5
    while any(os.path.exists(f"/proc/{p}") and _running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not [p for p in pids if _running(p)]
    assert sb.loop.run_until_complete(agentclient.health(box.agent_socket, timeout=1)) is None
    sb.drain()
    assert leftovers(settings, box.id) == []
    sb.destroy(box.id, background=True)  # idempotent: nothing to kill, nothing left
    assert leftovers(settings, box.id) == []


def test_recover_finishes_a_release_the_daemon_did_not(rt_env):
    settings, sb, image = rt_env
    box = sb.create(spec(image, "bgrecover"))
    sb.destroy(box.id, background=True)  # the release task is queued on sb's loop and not run yet
    assert Record.load(settings.sandboxes_dir / box.id).status == "destroying"
    other = SyncBackend(OciBackend(settings))  # a restarted daemon
    try:
        assert box.id not in {s.id for s in other.recover()}
        assert leftovers(settings, box.id) == []
    finally:
        other.close()
    sb.drain()  # the first daemon's task finds nothing left to do
    assert leftovers(settings, box.id) == []
