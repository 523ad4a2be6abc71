"""The first window listing right after `vnc/start` on a fresh desktop sandbox is a 200 with a list:
the desktop counts as started only once its window manager publishes the client list wmctrl reads."""
from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.real


@pytest.fixture
def desktop_agent():
    from support.real import TEMPLATES_DIR, require_real

    require_real()
    from sandboxd.config import Settings
    from sandboxd.runtime import get_backend
    from sandboxd.runtime.base import Resources, SandboxSpec
    from sandboxd.templates.store import TemplateStore

    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="dw-", dir="/tmp")), backend="crun",
                        templates_path=TEMPLATES_DIR)
    store = TemplateStore(settings)
    try:
        image = store.get("desktop")
    except Exception:
        pytest.skip("the desktop template is not built")
    loop = asyncio.new_event_loop()
    backend = get_backend(settings)
    spec = SandboxSpec(id=f"dw-{uuid.uuid4().hex[:8]}", image=image,
                       resources=Resources(vcpu=1.0, memory_mb=1024, disk_mb=1024, pids=512))
    rs = loop.run_until_complete(backend.create(spec))
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(rs.agent_socket)), base_url="http://agent",
                          timeout=120) as c:
            yield c
    finally:
        loop.run_until_complete(backend.destroy(spec.id))
        loop.close()


def test_windows_right_after_vnc_start_is_a_list(desktop_agent):
    r = desktop_agent.post("/desktop/vnc/start", json={})
    assert r.status_code == 200, r.text
    r = desktop_agent.get("/desktop/windows")
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["windows"], list)
