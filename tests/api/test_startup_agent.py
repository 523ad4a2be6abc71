"""core/startup.py against the real agent on the host (unix socket): each ready-check kind, and failure."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandboxd.core import startup
from sandboxd.core.startup import StartCommandFailed, run_start
from sandboxd.runtime.base import ReadyCheck, TemplateImage

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def agent(tmp_path, monkeypatch):
    sock = tmp_path / "agent.sock"
    # In a sandbox /tmp is its own; here every test's agent shares the host's, and a start command run by
    # another test worker would truncate this one's log.
    monkeypatch.setattr(startup, "START_LOG", str(tmp_path / "start.log"))
    # -I as in a sandbox, which also ignores PYTHONPATH: SRC goes first on the path so that this checkout's
    # agent runs, not the one installed in the interpreter's environment.
    main = f"import runpy, sys; sys.path.insert(0, {SRC!r}); runpy.run_module('sandboxd.agent', run_name='__main__')"
    proc = subprocess.Popen([sys.executable, "-I", "-c", main, "--unix", str(sock),
                             "--workspace", str(tmp_path)], env={**os.environ, "PYTHONPATH": SRC},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    marker = "31." + str(secrets.randbelow(10**6))  # a sleep length only our start commands use
    yield sock, tmp_path, marker
    proc.terminate()
    proc.wait(10)
    for pid in os.listdir("/proc"):  # the start command is detached (setsid): end it ourselves
        try:
            if pid.isdigit() and marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass


def image(ws: Path, start: str | None, check: ReadyCheck | None) -> TemplateImage:
    return TemplateImage(name="t", layers=(), content_hash="x", env={}, workdir=str(ws), user="root",
                         start_cmd=start, ready_check=check)


@pytest.mark.parametrize("kind", ["file", "process", "command"])
async def test_ready_kinds(agent, kind):
    sock, ws, marker = agent
    prog = "srv" + secrets.token_hex(4)  # a process name nothing else on the host has
    (ws / prog).write_bytes(Path("/bin/sleep").read_bytes())
    (ws / prog).chmod(0o755)
    value = {"file": str(ws / "ready.flag"), "process": prog, "command": "test -s ready.flag"}[kind]
    start = f"sleep 0.3; echo up > ready.flag; exec ./{prog} {marker}"
    t0 = time.monotonic()
    await run_start(sock, image(ws, start, ReadyCheck(kind, value, 10)))
    assert time.monotonic() - t0 >= 0.3 and (ws / "ready.flag").exists()  # waited for it, ran in the workdir


async def test_never_ready_fails_with_log_tail(agent):
    sock, ws, marker = agent
    with pytest.raises(StartCommandFailed) as exc:
        await run_start(sock, image(ws, f"echo starting-{marker}; exec sleep {marker}",
                                    ReadyCheck("file", str(ws / "never"), 1)))
    assert f"starting-{marker}" in exc.value.details["log_tail"] and exc.value.code == "template_start_failed"
