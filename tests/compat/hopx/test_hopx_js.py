"""The official `@hopx-ai/sdk` 0.5.x (JavaScript) on the machine's Node.js, unmodified, against sandboxd.
The package is installed from tests/compat/hopx/js/package-lock.json (`npm ci`) by tests/support/hopx_js.py."""
from __future__ import annotations

import subprocess

import pytest

from support.hopx_js import JS, hopx_js_sdk


@pytest.fixture(scope="session")
def hopx_js():
    hopx_js_sdk()
    return JS


def test_js_sdk_smoke(hopx_js, hopx_server):
    env = {**hopx_server.client_env, "HOPX_API_KEY": hopx_server.api_key}
    try:  # below pytest's own timeout, so a stall reports the steps that passed
        r = subprocess.run(["node", "smoke.mjs", hopx_server.url], cwd=hopx_js, env=env, capture_output=True,
                           text=True, timeout=240)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"smoke.mjs did not finish; its output so far:\n{exc.stdout}\n{exc.stderr}")
    assert r.returncode == 0 and "PASSED 15" in r.stdout, r.stdout[-4000:] + r.stderr[-2000:]
