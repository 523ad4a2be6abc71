"""A write the sandbox's filesystem refuses because the mount is read-only (EROFS) is the caller's
error, not the agent's: a 403 PERMISSION_DENIED in the HopX dialect and envd's permission answers in
the E2B one, never a 500. The agent package, bound read-only into every sandbox, is such a mount."""
from __future__ import annotations

import base64

import httpx
import pytest

from support.runtime import spec

pytestmark = pytest.mark.real

RO_DIR = "/opt/sandboxd/pkg/sandboxd"
ROOT = {"authorization": "Basic " + base64.b64encode(b"root:").decode()}


@pytest.fixture(scope="module")
def agent(rt_env):
    _, sb, image = rt_env
    b = sb.create(spec(image, "rofs"))
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(b.agent_socket)), base_url="http://agent", timeout=60) as c:
        # The agent runs as root in the sandbox: only the mount can refuse these writes.
        probe = sb.sh(b.id, f"touch {RO_DIR}/probe")
        assert b"Read-only file system" in probe.stderr, probe
        yield c
    sb.destroy(b.id)


def _forbidden(r: httpx.Response) -> None:
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "PERMISSION_DENIED", r.text


def test_hopx_write_upload_and_mkdir_on_a_read_only_mount_are_403(agent):
    _forbidden(agent.post("/files/write", json={"path": f"{RO_DIR}/x.txt", "content": "x"}))
    _forbidden(agent.post("/files/upload", params={"path": f"{RO_DIR}/y.bin"}, content=b"y" * 10,
                          headers={"content-type": "application/octet-stream"}))
    _forbidden(agent.post("/files/mkdir", json={"path": f"{RO_DIR}/newdir"}))
    _forbidden(agent.delete("/files/remove", params={"path": f"{RO_DIR}/__init__.py"}))
    assert agent.get("/health").json()["status"] == "healthy"


def test_envd_upload_and_make_dir_on_a_read_only_mount_are_refusals(agent):
    r = agent.post("/e2b/49983/files", params={"path": f"{RO_DIR}/z.bin"}, content=b"z",
                   headers={**ROOT, "content-type": "application/octet-stream"})
    assert 400 <= r.status_code < 500, r.text
    assert "read-only" in r.json()["message"].lower(), r.text
    r = agent.post("/e2b/49983/filesystem.Filesystem/MakeDir", json={"path": f"{RO_DIR}/newdir"},
                   headers={**ROOT, "content-type": "application/json", "connect-protocol-version": "1"})
    assert r.status_code == 403 and r.json()["code"] == "permission_denied", r.text
