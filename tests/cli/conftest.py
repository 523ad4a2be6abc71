"""CLI tests: the real `sandboxd` command against a real `sandboxd serve` (crun where it runs, else fake)."""
from __future__ import annotations

import subprocess
import sys

import pytest


from support.real import client_backends
from support.server import IN_CI, real_problem, running_server


# Module scope: a server lives only while its module runs (session scope kept one per suite and
# backend alive until the very end of a full run).
@pytest.fixture(scope="module", params=client_backends())
def server(request, tmp_path_factory):
    if request.param == "crun" and (problem := real_problem()):
        if IN_CI:
            pytest.fail(f"real backend unavailable in CI: {problem}")
        pytest.skip(problem)
    # A test module may set SERVER_ENV (settings for its server, e.g. to allow loopback webhooks).
    yield from running_server(tmp_path_factory, request.param, **getattr(request.module, "SERVER_ENV", {}))


@pytest.fixture
def cli(server):
    """Run `sandboxd ...` as a user would (SANDBOXD_URL/SANDBOXD_API_KEY in the environment)."""

    def run(*args: str, key: str | None = None, input: str | None = None, timeout: float = 120, **extra: str):
        env = {**server.client_env, **extra}
        if key is not None:
            env["SANDBOXD_API_KEY"] = key
        return subprocess.run([sys.executable, "-m", "sandboxd.cli.main", *args], env=env, input=input,
                              capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture(scope="module")
def sandbox_id(server):
    env = server.client_env
    r = subprocess.run([sys.executable, "-m", "sandboxd.cli.main", "sandbox", "create", "-t", "base"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    sid = r.stdout.strip()
    yield sid
    subprocess.run([sys.executable, "-m", "sandboxd.cli.main", "sandbox", "kill", sid], env=env,
                   capture_output=True, timeout=60)
