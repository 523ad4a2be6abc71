"""A real control plane on the crun backend (real sandboxes), served by uvicorn on a loopback port."""
from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import uvicorn

API_KEY = "monitoring-real-test-key"
TEMPLATES = Path(os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates"))


class RealServer:
    def __init__(self, data_dir: Path, **settings_kw):
        from sandboxd.api.app import create_app
        from sandboxd.config import Settings
        from sandboxd.runtime.oci.backend import OciBackend
        from sandboxd.wiring import ControlPlane

        opts = dict(data_dir=data_dir, templates_path=TEMPLATES, backend="crun", sample_interval_seconds=0.5,
                    webhook_allow_private=True, webhook_backoff_seconds=0.1)
        opts.update(settings_kw)
        self.settings = Settings(**opts)
        self.services = ControlPlane.build(self.settings, backend=OciBackend(self.settings))
        self.app = create_app(self.settings, self.services)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "RealServer":
        self.thread.start()
        end = time.time() + 60
        while not self.server.started:
            assert time.time() < end and self.thread.is_alive(), "control plane did not start"
            time.sleep(0.02)
        self.services.keys.bootstrap(API_KEY)
        self.client = httpx.Client(base_url=self.url, headers={"X-API-Key": API_KEY}, timeout=60)
        return self

    def __exit__(self, *exc) -> None:
        try:
            for sb in self.client.get("/v1/sandboxes").json().get("data", []):
                self.client.delete(f"/v1/sandboxes/{sb['id']}")
        except Exception:
            pass
        self.client.close()
        self.server.should_exit = True
        self.thread.join(60)

    def call(self, coro, timeout: float = 90):
        """Run a coroutine on the server's event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.server_loop()).result(timeout)

    def run_in_sandbox(self, sandbox_id: str, script: str, timeout: float = 60):
        """Run a shell script inside the sandbox through the backend (on the server's event loop)."""
        return self.call(self.services.backend.exec(sandbox_id, ["sh", "-c", script], timeout=timeout), timeout + 30)

    def start_in_sandbox(self, sandbox_id: str, script: str, timeout: float = 60):
        coro = self.services.backend.exec(sandbox_id, ["sh", "-c", script], timeout=timeout)
        return asyncio.run_coroutine_threadsafe(coro, self.server_loop())

    def diagnose(self, sandbox_id: str | None = None) -> str:
        """What the monitor and the server's threads are doing (for a failure message)."""
        import io
        import sys
        import traceback

        sampler, out = self.monitor.sampler, io.StringIO()
        print(f"sampler: ticks={sampler.ticks} last_duration={sampler.last_duration:.2f}s lag={sampler.lag_seconds:.2f}s "
              f"ending={sorted(sampler._ending)} suspects={sorted(sampler._suspects)} prev={sorted(sampler._prev)}", file=out)
        if sandbox_id:
            print("listed running:", sandbox_id in sampler._list_running(), file=out)
            for name in ("stats_many", "stats", "state"):
                try:
                    arg = [sandbox_id] if name == "stats_many" else sandbox_id
                    got = self.call(getattr(self.services.backend, name)(arg), timeout=10)
                except BaseException as exc:
                    got = repr(exc)
                print(f"backend.{name}: {got!r}", file=out)
        for task in asyncio.all_tasks(self.server_loop()):
            if task.get_name() == "metrics-sampler" or task.get_name().startswith("reclaim-"):
                print(f"task {task.get_name()}:", file=out)
                task.print_stack(limit=20, file=out)
        for ident, frame in sys._current_frames().items():
            print(f"thread {ident}:", "".join(traceback.format_stack(frame, limit=12)), file=out)
        return out.getvalue()

    def server_loop(self) -> asyncio.AbstractEventLoop:
        return self.monitor.loop

    @property
    def monitor(self):
        return self.app.state.services.monitor
