"""A real `sandboxd serve` subprocess on free ports with its own data dir: real HTTP, real gateway, real
agents. The fake backend runs agents as host processes; backend="crun" shares the built image store."""
from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from support.real import IN_CI, real_backend_problem as real_problem, unavailable  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
SHARED_TEMPLATES = os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates")
LOCAL = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def free_port_pair() -> int:
    """A free port whose successor is free too (the API port and the gateway port), below the kernel's
    ephemeral range: a port the kernel hands to outgoing connections (hundreds a second in a parallel run) could
    be taken between this check and the server's bind."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(10000, max(10002, low - 2))
        try:
            with socket.socket() as s, socket.socket() as s2:
                s.bind(("127.0.0.1", port))
                s2.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


def _die_with_parent() -> None:
    # If pytest is killed (timeout, Ctrl-C twice) the server must not outlive it: SIGTERM on parent death.
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class PortTaken(RuntimeError):
    pass


class CPServer:
    def __init__(self, data_dir: Path, database_url: str | None = None, backend: str = "fake", **env: str):
        self.data_dir = data_dir
        self.database_url = database_url
        self.backend = backend
        self.key = "test-admin-" + secrets.token_hex(8)
        self.port = free_port_pair()
        self.base = f"http://127.0.0.1:{self.port}"
        self.gateway = f"http://127.0.0.1:{self.port + 1}"
        self.extra_env = env
        self.proc: subprocess.Popen | None = None

    # The SDK-facing suites speak of the server's url and api_key, as the SDKs' settings do.
    @property
    def url(self) -> str:
        return self.base

    @property
    def api_key(self) -> str:
        return self.key

    @property
    def env(self) -> dict[str, str]:
        """The server's environment."""
        backend = self.extra_env.get("SANDBOXD_BACKEND", self.backend)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
        env.update(LOCAL)
        env.update({"SANDBOXD_DATA_DIR": str(self.data_dir), "SANDBOXD_BACKEND": backend,
                    "SANDBOXD_API_KEY": self.key, "SANDBOXD_PORT": str(self.port),
                    "SANDBOXD_GATEWAY_PORT": str(self.port + 1), "SANDBOXD_SSE_HEARTBEAT_SECONDS": "1"})
        if backend == "fake":
            # Fake agents are host processes and get PATH (not SANDBOXD_*): the test venv goes first so
            # their user python has ipykernel and matplotlib, as the code-interpreter template's has.
            env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", os.defpath)
        else:
            env["SANDBOXD_TEMPLATES_PATH"] = SHARED_TEMPLATES
        if self.database_url:
            env["SANDBOXD_DATABASE_URL"] = self.database_url
        env.update(self.extra_env)
        return env

    @property
    def client_env(self) -> dict[str, str]:
        """What a user's shell would hold to talk to this server."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SANDBOXD_", "HOPX_", "E2B_"))}
        env.update(LOCAL)
        env.update({"SANDBOXD_URL": self.base, "SANDBOXD_API_KEY": self.key, "HOPX_API_KEY": self.key,
                    "HOPX_BASE_URL": self.base, "E2B_API_KEY": self.key, "E2B_API_URL": self.base,
                    "E2B_SANDBOX_URL": self.gateway})
        return env

    @contextmanager
    def e2b_env(self) -> Iterator[None]:
        """E2B's SDK, in this process, talks to this server while inside (E2B_DOMAIN would override the URLs)."""
        keys = ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY", "E2B_DOMAIN")
        saved = {k: os.environ.get(k) for k in keys}
        os.environ.update({"E2B_API_URL": self.base, "E2B_SANDBOX_URL": self.gateway, "E2B_API_KEY": self.key})
        os.environ.pop("E2B_DOMAIN", None)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def start(self, timeout: float = 60) -> "CPServer":
        for _ in range(3):
            try:
                return self._start(timeout)
            except PortTaken:  # another process bound the port since free_port_pair: take another pair
                self.port = free_port_pair()
                self.base = f"http://127.0.0.1:{self.port}"
                self.gateway = f"http://127.0.0.1:{self.port + 1}"
        return self._start(timeout)

    def _start(self, timeout: float) -> "CPServer":
        log_path = self.data_dir / "serve.log"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sandboxd.cli.main", "serve", "--log-level", "warning"], env=self.env,
                cwd=ROOT, stdout=log, stderr=log, start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                tail = log_path.read_text(errors="replace")[-3000:]
                if "address already in use" in tail:
                    raise PortTaken(tail)
                raise RuntimeError(f"server exited: {tail}")
            try:
                if httpx.get(self.base + "/health", timeout=1, trust_env=False).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not answer /health within {timeout:.0f} s")

    def client(self, key: str | None = None, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"X-API-Key": key or self.key}, timeout=60, **kw)

    def wait_build(self, build_id: str, timeout: float = 600) -> dict:
        """The build's status document once it has ended (or as it is when timeout is up)."""
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while True:
                doc = c.get(f"/v1/templates/build/{build_id}/status").json()
                if doc["status"] in ("active", "success", "failed") or time.monotonic() > deadline:
                    return doc
                time.sleep(0.5)

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
            # The runtime's folders under /run/sandboxd (a tmpfs) outlive a server stopped by SIGKILL:
            # they accumulated until a reboot. Only empty ones go.
            from sandboxd.runtime.oci.paths import remove_empty

            remove_empty(self.data_dir)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
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
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


def running_server(tmp_path_factory, backend: str = "fake", **env: str) -> Iterator[CPServer]:
    """Generator body for fixtures: yields a started server and always cleans up."""
    if backend == "fake":
        data_dir = tmp_path_factory.mktemp(f"serve-{backend}")
    else:
        # Sandbox uids (100000+) must be able to traverse to their rootfs: pytest's tmp tree is 0700.
        data_dir = Path(tempfile.mkdtemp(prefix=f"serve-{backend}-", dir="/var/tmp"))
        data_dir.chmod(0o755)
    srv = CPServer(data_dir, backend=backend, **env)
    try:
        try:
            srv.start()
        except RuntimeError as e:
            unavailable(f"`sandboxd serve` did not start: {str(e).strip()}")
        yield srv
    finally:
        srv.close()
        if backend != "fake" and not any((data_dir / "sandboxes").glob("*/rootfs/*")):
            shutil.rmtree(data_dir, ignore_errors=True)  # never delete through a live mount
