"""Run `sandboxd serve` (fake backend) as a subprocess for API tests: real HTTP, real gateway, real agents."""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port_pair() -> int:
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 65000:
            continue
        try:
            with socket.socket() as s2:
                s2.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


class CPServer:
    def __init__(self, data_dir: Path, database_url: str | None = None, **env: str):
        self.data_dir = data_dir
        self.database_url = database_url
        self.key = "roomD-admin-" + secrets.token_hex(8)
        self.port = free_port_pair()
        self.base = f"http://127.0.0.1:{self.port}"
        self.gateway = f"http://127.0.0.1:{self.port + 1}"
        self.extra_env = env
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
        env.update({
            "SANDBOXD_DATA_DIR": str(self.data_dir), "SANDBOXD_BACKEND": "fake", "SANDBOXD_API_KEY": self.key,
            "SANDBOXD_SSE_HEARTBEAT_SECONDS": "1", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        })
        if self.database_url:
            env["SANDBOXD_DATABASE_URL"] = self.database_url
        env.update(self.extra_env)
        return env

    def start(self) -> "CPServer":
        log = open(self.data_dir / "serve.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandboxd.cli.main", "serve", "--port", str(self.port), "--log-level", "warning"],
            env=self.env, cwd=ROOT, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(self.data_dir / 'serve.log').read_text()[-3000:]}")
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def client(self, key: str | None = None, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"X-API-Key": key or self.key}, timeout=60, **kw)

    def kill_all_sandboxes(self) -> None:
        with self.client() as c:
            for _ in range(20):
                r = c.get("/v1/sandboxes", params={"limit": 100})
                items = r.json().get("data") if r.status_code == 200 else None
                if not items:
                    return
                for sb in items:
                    c.delete(f"/v1/sandboxes/{sb['id']}")

    def close(self) -> None:
        """Teardown that never leaves a server or an agent behind, whatever state the test left."""
        try:
            if self.proc is not None:
                self.kill_all_sandboxes()
        except Exception:
            pass
        finally:
            self.stop()
            self.reap_agents()
            # The runtime's folders under /run/sandboxd (a tmpfs) outlive a server stopped by SIGKILL: ~3 per
            # suite run accumulated until a reboot. Only empty ones go.
            from sandboxd.runtime.oci.paths import remove_empty

            remove_empty(self.data_dir)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def agent_pids(self) -> list[int]:
        """Agent processes this server's fake backend started (found by their workspace path)."""
        out = []
        needle = str(self.data_dir / "sandboxes")
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "sandboxd.agent" in cmd and needle in cmd:
                out.append(int(pid))
        return out

    def reap_agents(self) -> None:
        for pid in self.agent_pids():
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


def create_database(admin_url: str) -> tuple[str, str]:
    """A fresh PostgreSQL database for one test module; returns (url, name)."""
    import sqlalchemy as sa

    name = "sbx_roomd_" + secrets.token_hex(4)
    url = admin_url if "+psycopg" in admin_url else admin_url.replace("postgresql://", "postgresql+psycopg://", 1)
    eng = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    eng.dispose()
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}", name


def drop_database(admin_url: str, name: str) -> None:
    import sqlalchemy as sa

    url = admin_url if "+psycopg" in admin_url else admin_url.replace("postgresql://", "postgresql+psycopg://", 1)
    eng = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    eng.dispose()
