"""Desktop tests on the host: the real agent (`python -m sandboxd.agent --port N`, which mounts the
desktop package), a real Xvnc display on a private display number, and the official hopx-ai SDK
pointed at the agent with Sandbox.debug()."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from support.displays import free_display  # noqa: F401 - test modules import it from here
import pytest

from sandboxd.agent.desktop import deps

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SRC = str(Path(__file__).resolve().parents[2] / "src")


def need(programs: dict[str, str]) -> None:
    missing = deps.missing(programs)
    if missing:
        msg = "host lacks desktop packages: apt-get install " + " ".join(missing)
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Agent:
    """The real agent as a host process on 127.0.0.1:<port>, with its desktop on display :N."""

    def __init__(self, state_dir: Path, display: int, path_env: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.display = display
        env = dict(os.environ, SANDBOXD_DESKTOP_DISPLAY=str(display), SANDBOXD_DESKTOP_DIR=str(state_dir),
                   PYTHONPATH=SRC)
        env.pop("DISPLAY", None)
        if path_env is not None:
            env["PATH"] = path_env
        workspace = state_dir / "workspace"
        workspace.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "sandboxd.agent", "--port", str(self.port),
                                      "--workspace", str(workspace)], env=env)
        deadline = time.time() + 20
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=2).json().get("status") == "healthy":
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError("the agent did not become healthy")
            time.sleep(0.05)

    @property
    def display_env(self) -> dict[str, str]:
        return dict(os.environ, DISPLAY=f":{self.display}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the desktop processes die with it (PDEATHSIG)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def desktop_agent(tmp_path_factory):
    need(deps.CORE)
    agent = Agent(tmp_path_factory.mktemp("h-desktop"), free_display())
    # Its X server now, not at the first desktop call: until it holds the display's lock, another picker
    # (a test's own display, free_display in another module object) would see the number free.
    try:
        for _ in range(3):  # the agent's start is idempotent; on a loaded host its 10 s bound can pass
            r = httpx.get(agent.url + "/desktop/display", timeout=60)
            if r.status_code == 200:
                break
            print(f"desktop start: {r.status_code} {r.text}", file=sys.stderr)
        assert r.status_code == 200, r.text
    except BaseException:
        agent.stop()
        raise
    yield agent
    agent.stop()


@pytest.fixture(scope="session")
def sdk_sandbox(desktop_agent):
    from hopx_ai import Sandbox

    return Sandbox.debug(desktop_agent.url, "test-token", sandbox_id="h-desktop-test")


@pytest.fixture
def display_env(desktop_agent) -> dict[str, str]:
    """Environment for programs drawing on the test display; the first desktop call starts it."""
    assert httpx.get(desktop_agent.url + "/desktop/display", timeout=30).status_code == 200
    return desktop_agent.display_env
