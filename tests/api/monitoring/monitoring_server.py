"""A real control plane (create_app, fake backend, SQLite) served by uvicorn on a loopback port (monitoring API tests)."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from sandboxd.api.app import create_app
from sandboxd.config import Settings

API_KEY = "monitoring-api-test-key"


class Server:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.app = create_app(settings)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        end = time.time() + 30
        while not self.server.started:
            assert time.time() < end and self.thread.is_alive(), "control plane did not start"
            time.sleep(0.02)
        self.services.keys.bootstrap(API_KEY)
        self.client = httpx.Client(base_url=self.url, headers={"X-API-Key": API_KEY}, timeout=30)
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(30)

    @property
    def services(self):
        return self.app.state.services

    @property
    def monitor(self):
        return self.app.state.services.monitor


def make_settings(tmp: Path, **kw) -> Settings:
    opts = dict(data_dir=tmp, backend="fake", sample_interval_seconds=0.25, webhook_allow_private=True,
                webhook_backoff_seconds=0.05, webhook_timeout_seconds=2.0)
    opts.update(kw)
    return Settings(**opts)


