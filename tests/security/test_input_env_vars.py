"""Env vars given at create reach execve: a NUL, an empty name or '=' in a name is a 400 naming the field in both
dialects, and no sandbox is made."""
from __future__ import annotations


import httpx
import pytest


from support.server import CPServer

BAD = [{"A": "x\0y"}, {"": "x"}, {"A=B": "x"}, {"A\0B": "x"}]


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    srv = CPServer(tmp_path_factory.mktemp("cp"), None).start()
    yield srv
    srv.close()


@pytest.mark.parametrize("env", BAD)
def test_hopx_create_refuses_bad_env(cp, env):
    with cp.client() as c:
        r = c.post("/v1/sandboxes", json={"template_name": "base", "env_vars": env})
        assert r.status_code == 400, r.text
        assert "env_vars" in r.text
        assert c.get("/v1/sandboxes").json().get("data", []) == []


@pytest.mark.parametrize("env", BAD)
def test_e2b_create_refuses_bad_env(cp, env):
    r = httpx.post(cp.base + "/sandboxes", json={"templateID": "base", "timeout": 60, "envVars": env},
                   headers={"X-API-Key": cp.key}, timeout=60)
    assert r.status_code == 400, r.text
    assert "envVars" in r.text
