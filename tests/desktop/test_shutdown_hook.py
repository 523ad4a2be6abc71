"""The agent's Services.shutdown() stops the desktop (Xvnc, openbox) it started on demand."""
from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from sandboxd.agent.app import create_app
from sandboxd.agent.desktop import deps
from sandboxd.agent.server import serve_connection
from sandboxd.agent.services import Services

from support.displays import free_display

from .conftest import need


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


async def test_shutdown_stops_the_display(tmp_path, monkeypatch):
    need(deps.CORE)
    monkeypatch.setenv("SANDBOXD_DESKTOP_DISPLAY", str(free_display()))
    monkeypatch.setenv("SANDBOXD_DESKTOP_DIR", str(tmp_path / "desktop"))
    monkeypatch.delenv("DISPLAY", raising=False)
    app = create_app(Services(workspace=str(tmp_path)))

    async def on_conn(reader, writer):
        await serve_connection(reader, writer, app.dispatch, app.error_response)

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            assert (await c.get("/desktop/display")).status_code == 200  # starts Xvnc + openbox
            procs = (await c.get("/desktop/debug/processes")).json()
        pids = [p["pid"] for p in (procs.get("processes", procs) if isinstance(procs, dict) else procs)
                if isinstance(p, dict) and p.get("pid")]
        assert pids and all(alive(p) for p in pids), procs
        await app.services.shutdown()
        for _ in range(100):
            if not any(alive(p) for p in pids):
                break
            await asyncio.sleep(0.05)
        assert not any(alive(p) for p in pids), "desktop processes outlived the agent's shutdown"
    finally:
        server.close()
        await app.services.shutdown()
