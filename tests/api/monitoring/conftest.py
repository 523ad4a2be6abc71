"""Fixtures for the monitoring API tests."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from monitoring_server import Server, make_settings

SEED_JS = Path(__file__).parents[2] / "unit" / "monitor" / "seed_verify.js"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Server(make_settings(tmp_path_factory.mktemp("monitoring"))) as srv:
        yield srv


@pytest.fixture
def seed_verify():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is needed to run the seed's verification function")

    def verify(secret: str, body: bytes, signature: str) -> bool:
        out = subprocess.run([node, str(SEED_JS)], input=json.dumps({"secret": secret, "payload": body.decode(), "sig": signature}),
                             capture_output=True, text=True, timeout=30, check=True)
        return out.stdout == "true"

    return verify
