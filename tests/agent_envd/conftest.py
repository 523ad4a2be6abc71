"""In-process agent for the envd protocol tests: the real agent app served on a loopback port."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest

from sandboxd.agent.app import create_app
from sandboxd.agent.server import serve_connection
from sandboxd.agent.services import Services


@pytest.fixture
async def agent(tmp_path, monkeypatch):
    # The code interpreter looks for an ipykernel python on PATH: the project venv has one.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:/usr/bin:/bin")
    monkeypatch.setenv("HOME", str(tmp_path))
    app = create_app(Services(workspace=str(tmp_path)))

    async def on_conn(reader, writer):
        await serve_connection(reader, writer, app.dispatch, app.error_response)

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        yield client, tmp_path, app
    await app.services.shutdown()  # envd's processes and kernels included
    server.close()
