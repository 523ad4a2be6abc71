"""A build's own files are hostile to the host that reads them (real builds through the API, crun).

A RUN step controls every file of the layer it leaves. The host reads some of them afterwards (USER looks
the name up in /etc/passwd): a symlink planted there must resolve inside the image, never to a host file,
and a FIFO must neither be read nor stall the server, whose event loop also serves the API and the gateway.
"""
from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest


from support.server import CPServer

TEMPLATES = os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates")
pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def real():
    # Not under pytest's 0700 tmp dir: the sandbox's mapped root must traverse the data dir.
    data = Path(tempfile.mkdtemp(prefix="sec-bhf-", dir="/tmp"))
    data.chmod(0o755)
    srv = CPServer(data, None, SANDBOXD_BACKEND="crun", SANDBOXD_TEMPLATES_PATH=TEMPLATES).start()
    srv.made = []
    yield srv
    try:
        srv.kill_all_sandboxes()
        with srv.client() as c:
            for tid in srv.made:  # images of builds that (wrongly) succeeded live in the shared store
                c.delete(f"/v1/templates/{tid}")
    finally:
        srv.close()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def host_passwd():
    """A host-only file that reads like a passwd with a user no image has."""
    d = Path(tempfile.mkdtemp(prefix="sec-bhf-host-"))
    user = "intruder" + secrets.token_hex(3)
    (d / "passwd").write_text(f"{user}:x:4242:4242::/:/bin/sh\n")
    yield d / "passwd", user
    shutil.rmtree(d, ignore_errors=True)


def trigger(srv, steps: list[dict]) -> tuple[str, str]:
    name = f"sec-bhf-{secrets.token_hex(4)}"
    with srv.client() as c:
        r = c.post("/v1/templates/build", json={"name": name, "from_image": "base", "steps": steps,
                                                "cpu": 1, "memory": 512, "diskGB": 2, "skipCache": True})
    assert r.status_code == 202, r.text
    srv.made.append(r.json()["template_id"])
    return r.json()["build_id"], r.json()["template_id"]


def wait_build(srv, build_id: str, *, health_timeout: float | None = None) -> dict:
    """The build's final status. With health_timeout, /health must answer within it on every poll while
    the build runs (a server whose event loop is stuck answers nothing)."""
    deadline = time.monotonic() + 600
    with srv.client() as c:
        while time.monotonic() < deadline:
            if health_timeout is not None:
                r = httpx.get(srv.base + "/health", timeout=health_timeout)
                assert r.status_code == 200
            doc = c.get(f"/v1/templates/build/{build_id}/status").json()
            if doc["status"] not in ("building", "queued"):
                return doc
            time.sleep(0.5)
    pytest.fail("the build did not end")


def test_user_does_not_read_a_host_file_through_a_planted_symlink(real, host_passwd):
    path, user = host_passwd
    build_id, _ = trigger(real, [
        {"type": "USER", "args": ["root"]},
        {"type": "RUN", "args": [f"ln -sf {path} /etc/passwd"]},
        {"type": "USER", "args": [user]},
    ])
    doc = wait_build(real, build_id)
    # The image has no such user: the host file behind the symlink was not consulted.
    assert doc["status"] == "failed", doc
    assert "no such user" in doc["error_message"] and str(path) not in doc["error_message"]


def test_a_fifo_as_passwd_neither_hangs_the_server_nor_is_read(real):
    build_id, template_id = trigger(real, [
        {"type": "USER", "args": ["root"]},
        {"type": "RUN", "args": ["rm /etc/passwd && mkfifo -m 666 /etc/passwd"]},
        {"type": "USER", "args": ["somebody"]},
    ])
    doc = wait_build(real, build_id, health_timeout=10)
    assert doc["status"] == "failed" and "no such user" in doc["error_message"], doc
    with real.client() as c:
        assert c.get(f"/v1/templates/{template_id}").json()["status"] == "failed"
