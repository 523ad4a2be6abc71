"""SDK tests run against a real `sandboxd serve`: on the real crun backend where it runs (always in CI), else
on the fake one (real control plane, gateway and agents; agents as host processes)."""
from __future__ import annotations


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
    yield from running_server(tmp_path_factory, request.param)


@pytest.fixture
def sdk_env(server, monkeypatch):
    """SANDBOXD_URL / SANDBOXD_API_KEY set the way a user would."""
    monkeypatch.setenv("SANDBOXD_URL", server.url)
    monkeypatch.setenv("SANDBOXD_API_KEY", server.api_key)
    return server


@pytest.fixture(scope="module")
def sandbox(server):
    from sandboxd import Sandbox

    sb = Sandbox.create("code-interpreter", api_key=server.api_key, api_url=server.url)
    yield sb
    try:
        sb.kill()
    except Exception:
        pass
    sb.close()
