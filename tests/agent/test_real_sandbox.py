"""End to end: the agent inside real crun sandboxes (tini as PID 1, fd 3 socket, user namespace),
built from the templates room's images. Marked `real`: skipped without root/crun/templates, never in CI."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def real_env():
    from support.real import require_real

    require_real()
    from sandboxd.config import Settings
    from sandboxd.runtime import get_backend
    from sandboxd.templates.store import TemplateStore

    # short data dir: the agent socket path must fit in sun_path
    from support.real import TEMPLATES_DIR

    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="ag-", dir="/tmp")), backend="crun",
                        templates_path=TEMPLATES_DIR)
    loop = asyncio.new_event_loop()
    backend = get_backend(settings)
    store = TemplateStore(settings)
    made: list[str] = []

    def create(template: str, **kw):
        from sandboxd.runtime.base import Resources, SandboxSpec

        spec = SandboxSpec(id=f"agent-{uuid.uuid4().hex[:8]}", image=store.get(template),
                           resources=Resources(vcpu=1.0, memory_mb=1024, disk_mb=1024, pids=512), **kw)
        made.append(spec.id)
        return loop.run_until_complete(backend.create(spec))

    try:
        yield create
    finally:
        for sid in made:
            try:
                loop.run_until_complete(backend.destroy(sid))
            except Exception:
                pass
        loop.close()
        shutil.rmtree(settings.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def box(real_env):
    rs = real_env("code-interpreter", env={"SANDBOX_LEVEL": "sandbox"})
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(rs.agent_socket)), base_url="http://agent",
                      timeout=120) as c:
        yield rs, c


def test_health_and_identity_inside_the_sandbox(box):
    rs, c = box
    assert c.get("/health").json()["status"] == "healthy"
    r = c.post("/commands/run", json={"command": "bash", "args": ["-c", "id -u; cat /proc/1/comm; pwd"]}).json()
    assert r["stdout"] == "0\ntini\n/workspace\n", r


def test_python_kernel_state_and_rich_outputs(box):
    _, c = box
    assert c.post("/execute", json={"code": "import sys\nv = 21"}).json()["success"] is True
    r = c.post("/execute", json={"code": "print(v * 2, sys.executable)"}).json()
    out = r["stdout"].split()
    assert out[0] == "42" and not out[1].startswith("/opt/sandboxd"), r  # the USER python, not the agent's
    r = c.post("/execute", json={"code": "import matplotlib.pyplot as plt\nplt.figure(figsize=(3, 2), dpi=50)\n"
                                         "plt.plot([1, 2])\nplt.show()"}).json()
    from PIL import Image

    w, h = Image.open(io.BytesIO(base64.b64decode(r["png"]))).size
    assert 0.7 * 150 <= w <= 150 and 0.7 * 100 <= h <= 100
    r = c.post("/execute", json={"code": "import pandas as pd\npd.DataFrame({'a': [1]})"}).json()
    assert r["dataframe"]["data"] == [[1]] and "<table" in r["html"]


def test_timeout_keeps_kernel_state(box):
    _, c = box
    c.post("/execute", json={"code": "keep = 'yes'"})
    r = c.post("/execute", json={"code": "import time\ntime.sleep(30)", "timeout": 1}).json()
    assert r["timed_out"] is True and r["success"] is False
    assert c.post("/execute", json={"code": "print(keep)"}).json()["stdout"] == "yes\n"


def test_node_and_env_precedence(box):
    _, c = box
    r = c.post("/execute", json={"code": "console.log(1 + 1)", "language": "javascript"}).json()
    assert r["stdout"] == "2\n", r
    c.patch("/env", json={"env_vars": {"SANDBOX_LEVEL": "env-api"}})
    try:
        line = {"command": "bash", "args": ["-c", "echo $SANDBOX_LEVEL $LANG"]}
        assert c.post("/commands/run", json=line).json()["stdout"] == "env-api C.UTF-8\n"
        r = c.post("/commands/run", json={**line, "env": {"SANDBOX_LEVEL": "request"}}).json()
        assert r["stdout"] == "request C.UTF-8\n"
    finally:
        c.delete("/env")
    assert c.post("/commands/run", json=line).json()["stdout"] == "sandbox C.UTF-8\n"


def test_run_as_user(box):
    _, c = box
    r = c.post("/commands/run", json={"command": "bash", "args": ["-c", "id -un; echo $HOME"], "user": "user"}).json()
    assert r["stdout"] == "user\n/home/user\n", r
    r = c.post("/execute", json={"code": "import os\nprint(os.getuid())", "user": "user"}).json()
    assert r["stdout"] == "1000\n", r  # Python as `user` runs in its own interpreter, not the root kernel


def test_files_roundtrip_and_metrics_from_own_cgroup(box):
    _, c = box
    blob = bytes(range(256))
    c.post("/files/write", json={"path": "/workspace/d/x.bin", "content": base64.b64encode(blob).decode(),
                                 "encoding": "base64", "mode": "0600"})
    assert c.get("/files/download", params={"path": "/workspace/d/x.bin"}).content == blob
    names = [f["name"] for f in c.get("/files/list", params={"path": "/workspace/d"}).json()["files"]]
    assert names == ["x.bin"]
    m = c.get("/metrics/snapshot").json()["system"]
    # the memory limit is the sandbox's own cgroup limit (1024 MiB), not the host's RAM
    assert m["memory"]["total"] == 1024 * 2**20 and 0 < m["memory"]["used"] < m["memory"]["total"]
    procs = c.get("/processes").json()["processes"]
    assert procs[0]["pid"] == 1 and procs[0]["name"] == "tini"


def test_stream_and_terminal_over_the_socket(box):
    rs, _ = box
    from websockets.sync.client import unix_connect

    with unix_connect(str(rs.agent_socket), "ws://agent/execute/stream") as ws:
        t0 = time.monotonic()
        ws.send(json.dumps({"type": "execute", "code": "echo a; sleep 1; echo b", "language": "bash"}))
        first = json.loads(ws.recv(timeout=30))
        first_at = time.monotonic() - t0
        assert first == {**first, "type": "stdout", "data": "a\n"}
        kinds = []
        while not kinds or kinds[-1] != "complete":
            kinds.append(json.loads(ws.recv(timeout=30))["type"])
        assert time.monotonic() - t0 - first_at >= 0.9  # "a" came before the 1 s sleep ended
    with unix_connect(str(rs.agent_socket), "ws://agent/terminal") as ws:
        ws.send(json.dumps({"type": "input", "data": "echo T-$((2*21)); exit 0\n"}))
        out, code = "", None
        while code is None:
            msg = json.loads(ws.recv(timeout=30))
            out += msg.get("data", "")
            code = msg.get("code") if msg["type"] == "exit" else None
        assert "T-42" in out and code == 0
