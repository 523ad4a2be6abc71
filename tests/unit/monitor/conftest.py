from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from sandboxd.core.eventlog import EventLog
from sandboxd.core.events import EventBus
from sandboxd.core.store import Store, make_engine, upgrade

SEED_JS = Path(__file__).with_name("seed_verify.js")


@pytest.fixture
def seed_verify():
    """The seed's own verification function (run by node) as a Python callable(secret, body, signature)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is needed to run the seed's verification function")

    def verify(secret: str, body: bytes, signature: str) -> bool:
        out = subprocess.run([node, str(SEED_JS)], input=json.dumps({"secret": secret, "payload": body.decode(), "sig": signature}),
                             capture_output=True, text=True, timeout=30, check=True)
        return out.stdout == "true"

    return verify


@pytest.fixture
def store(tmp_path: Path) -> Store:
    import sandboxd.core.store.monitoring  # noqa: F401  (registers the tables)

    engine = make_engine(f"sqlite:///{tmp_path / 'mon.db'}")
    upgrade(engine)
    yield Store(engine)
    engine.dispose()


@pytest.fixture
def eventlog(store: Store) -> EventLog:
    return EventLog(store, EventBus())
