"""recover(): the daemon is SIGKILLed mid-work and restarted; live sandboxes are adopted, half-created ones go."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from support.runtime import PREFIX, leftovers
from sandboxd.runtime import get_backend
from sandboxd.runtime.base import RuntimeState
from sandboxd.runtime import agentclient
from sandboxd.runtime.oci.state import Record

pytestmark = pytest.mark.real


def test_recover_after_sigkill(rt_env):
    settings, sb, _ = rt_env
    prefix = f"{PREFIX}-rec{uuid.uuid4().hex[:6]}"
    child = subprocess.Popen([sys.executable, str(Path(__file__).with_name("daemon_child.py")),
                              str(settings.data_dir), prefix], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).parent),
                                  "SANDBOXD_TEMPLATES_PATH": str(settings.templates_dir)})
    try:
        assert child.stdout.readline().strip() == "READY"
        half = Path(settings.sandboxes_dir) / f"{prefix}-half"
        deadline = time.monotonic() + 30
        while not (half / "state.json").exists():  # kill it while the third create is under way
            assert time.monotonic() < deadline
            time.sleep(0.002)
        time.sleep(0.3)  # its container started (the child holds it at the health check)
        rec = Record.load(half)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert rec is not None and rec.status == "creating"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    # a fresh process-level backend, like a restarted daemon
    sb.backend = get_backend(settings)
    adopted = {s.id: s for s in sb.recover()}
    assert adopted[f"{prefix}-run"].state is RuntimeState.RUNNING
    assert adopted[f"{prefix}-paused"].state is RuntimeState.PAUSED
    assert f"{prefix}-half" not in adopted
    assert leftovers(settings, f"{prefix}-half") == []

    run = adopted[f"{prefix}-run"]
    assert sb.loop.run_until_complete(agentclient.health(run.agent_socket))["status"] == "healthy"
    assert sb.exec(run.id, ["cat", "/workspace/mark"]).stdout == b"before-crash\n"
    sb.resume(f"{prefix}-paused")
    assert sb.exec(f"{prefix}-paused", ["echo", "thawed"]).stdout == b"thawed\n"
    # recover is idempotent: a second pass adopts the same sandboxes and removes nothing
    assert {s.id for s in sb.recover()} >= {f"{prefix}-run", f"{prefix}-paused"}
    for sid in (f"{prefix}-run", f"{prefix}-paused"):
        sb.destroy(sid)
        assert leftovers(settings, sid) == []
