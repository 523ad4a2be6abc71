"""Agent protocol tests: the real agent process (`python -I -m sandboxd.agent`) on the host.

One agent per test session, on a TCP port (so official clients can reach it too), with a temp workspace.
The user python (for the Jupyter kernel) is this interpreter, which has ipykernel/numpy/pandas/matplotlib
from the `test` extra.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_agent(args: list[str], workspace: Path, extra_env: dict | None = None, **popen) -> subprocess.Popen:
    env = {**os.environ, "SANDBOXD_AGENT_USER_PYTHON": sys.executable, "PYTHONPATH": SRC,
           "AGENT_TEMPLATE_VAR": "from-template", **(extra_env or {})}
    env.pop("MPLBACKEND", None)
    # -I as in a sandbox, which also ignores PYTHONPATH: SRC goes first on the path so that this checkout's
    # agent runs, not the one installed in the interpreter's environment.
    main = f"import runpy, sys; sys.path.insert(0, {SRC!r}); runpy.run_module('sandboxd.agent', run_name='__main__')"
    return subprocess.Popen([sys.executable, "-I", "-c", main, "--workspace", str(workspace), *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen)


def wait_healthy(client: httpx.Client, proc: subprocess.Popen, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited: {proc.stderr.read().decode()}")
        try:
            if client.get("/health").json()["status"] == "healthy":
                return
        except httpx.TransportError:
            time.sleep(0.02)
    raise RuntimeError("agent did not become healthy")


@pytest.fixture(scope="session")
def agent(tmp_path_factory):
    """(base_url, workspace) of a running agent."""
    workspace = tmp_path_factory.mktemp("agent-ws")
    port = free_port()
    proc = start_agent(["--port", str(port)], workspace)
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=30) as c:
        wait_healthy(c, proc)
    yield base, workspace
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def client(agent):
    with httpx.Client(base_url=agent[0], timeout=60, headers={"Authorization": "Bearer ignored"}) as c:
        yield c


@pytest.fixture
def workspace(agent) -> Path:
    return agent[1]


@pytest.fixture
def ws_base(agent) -> str:
    return agent[0].replace("http://", "ws://")


def assert_error(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["code"] == code and body["error"] and body["message"] and body["request_id"]
    assert resp.headers["x-request-id"] == body["request_id"]
    return body
