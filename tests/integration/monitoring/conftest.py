"""Fixtures for the monitoring tests on real sandboxes (crun). Marked `real`: they skip without root,
crun and built templates, and fail in CI if those are missing."""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from support.real import require_real

SEED_JS = Path(__file__).parents[2] / "unit" / "monitor" / "seed_verify.js"


@pytest.fixture(scope="module")
def real_server():
    require_real()  # before building anything: module fixtures run before the `real` marker's check
    from monitoring_real_server import RealServer

    # Sandboxes run as uid 100000+: their data dir must be traversable (pytest's tmp dirs are 0700).
    data = Path(tempfile.mkdtemp(prefix="sandboxd-monitoring-", dir="/var/tmp"))
    data.chmod(0o755)
    try:
        with RealServer(data, sample_interval_seconds=0.5) as srv:
            yield srv
    finally:
        shutil.rmtree(data, ignore_errors=True)


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
