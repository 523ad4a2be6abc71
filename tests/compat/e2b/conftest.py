"""Compat fixture: a real `sandboxd serve` subprocess on free ports, and the official E2B SDK pointed at
it with only E2B_API_URL (control plane), E2B_SANDBOX_URL (gateway) and E2B_API_KEY.

Backend: SANDBOXD_E2B_COMPAT_BACKEND, default `crun` in CI (real sandboxes from the shared image store;
a host that cannot run them fails the suite there) and `fake` elsewhere (sandboxes are host processes
running the real agent), so a developer gets a fast run and CI the real one.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from support.server import free_port_pair

API_KEY = "e2b-compat-key-0123456789abcdef"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BACKEND = os.environ.get("SANDBOXD_E2B_COMPAT_BACKEND") or ("crun" if IN_CI else "fake")
SHARED_TEMPLATES = Path("/var/lib/sandboxd/templates")






@pytest.fixture(scope="session")
def e2b_server():
    if BACKEND != "fake":
        # Same rule as tests/conftest.py's `real` marker: skip outside CI, fail in CI.
        problem = None
        if os.geteuid() != 0:
            problem = "needs root"
        elif not shutil.which("crun"):
            problem = "crun is not installed"
        elif not (SHARED_TEMPLATES / "images").is_dir():
            problem = f"no built templates in {SHARED_TEMPLATES}"
        if problem:
            if IN_CI:
                pytest.fail(f"real backend unavailable in CI: {problem}")
            pytest.skip(problem)
    data = Path(tempfile.mkdtemp(prefix="e2b-compat-"))
    port = free_port_pair()
    bindir = Path(sys.executable).parent
    env = {**os.environ,
           "SANDBOXD_DATA_DIR": str(data), "SANDBOXD_PORT": str(port), "SANDBOXD_GATEWAY_PORT": str(port + 1),
           "SANDBOXD_HOST": "127.0.0.1", "SANDBOXD_API_KEY": API_KEY, "SANDBOXD_BACKEND": BACKEND,
           # E2B's examples build FROM ubuntu:22.04; no registry is reachable here, so the operator maps it.
           "SANDBOXD_IMAGE_ALIASES": "ubuntu=base",
           # The fake backend runs the agent on the host: its code interpreter needs an ipykernel python
           # first on PATH (the project venv has one).
           "PATH": f"{bindir}:{os.environ.get('PATH', '')}"}
    if BACKEND != "fake" and SHARED_TEMPLATES.exists():
        env["SANDBOXD_TEMPLATES_PATH"] = str(SHARED_TEMPLATES)
    log = open(data / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "sandboxd.cli.main", "serve", "--log-level", "warning"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{api}/health", timeout=1).status_code < 500:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("sandboxd serve did not start:\n" + (data / "serve.log").read_text()[-3000:])
        time.sleep(0.1)
    yield {"api": api, "sandbox": f"http://127.0.0.1:{port + 1}", "key": API_KEY, "data": data, "proc": proc,
           "backend": BACKEND}
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session", autouse=False)
def e2b_env(e2b_server):
    """Point the official SDK at the server exactly as a user would: environment variables only."""
    saved = {k: os.environ.get(k) for k in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY", "E2B_DOMAIN")}
    os.environ["E2B_API_URL"] = e2b_server["api"]
    os.environ["E2B_SANDBOX_URL"] = e2b_server["sandbox"]
    os.environ["E2B_API_KEY"] = e2b_server["key"]
    yield e2b_server
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def sandbox(e2b_env):
    from e2b import Sandbox

    sbx = Sandbox.create(timeout=120)
    yield sbx
    try:
        sbx.kill()
    except Exception:
        pass


@pytest.fixture
def ci_sandbox(e2b_env):
    from e2b_code_interpreter import Sandbox

    sbx = Sandbox.create(timeout=180)
    yield sbx
    try:
        sbx.kill()
    except Exception:
        pass
