"""A real `sandboxd serve` subprocess on free ports with a temp data dir, for the SDK, CLI and compat
suites. With backend="crun" it shares the built image store (/var/lib/sandboxd/templates)."""
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
import pytest

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SHARED_TEMPLATES = os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates")


def unavailable(reason: str) -> None:
    """Outside CI a server that cannot start yet is a skip with the reason; in CI it is a failure."""
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def real_problem() -> str | None:
    import shutil

    if os.geteuid() != 0:
        return "needs root"
    if not shutil.which("crun"):
        return "crun is not installed"
    images = Path(SHARED_TEMPLATES) / "images"
    if not images.is_dir() or not any(images.iterdir()):
        return f"no built templates in {SHARED_TEMPLATES} (scripts/install.sh builds them)"
    return None


def _die_with_parent() -> None:
    # If pytest is killed (timeout, Ctrl-C twice) the server must not outlive it: SIGTERM on parent death.
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port_pair() -> int:
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


class Server:
    def __init__(self, data_dir: Path, backend: str = "fake"):
        self.data_dir = data_dir
        self.backend = backend
        self.api_key = "roomF-" + secrets.token_hex(12)
        self.port = _free_port_pair()
        self.url = f"http://127.0.0.1:{self.port}"
        self.gateway = f"http://127.0.0.1:{self.port + 1}"
        self.proc: subprocess.Popen | None = None

    @property
    def client_env(self) -> dict[str, str]:
        """What a user's shell would hold to talk to this server."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SANDBOXD_", "HOPX_", "E2B_"))}
        env.update({"SANDBOXD_URL": self.url, "SANDBOXD_API_KEY": self.api_key, "HOPX_API_KEY": self.api_key,
                    "HOPX_BASE_URL": self.url, "E2B_API_KEY": self.api_key, "E2B_API_URL": self.url,
                    "E2B_SANDBOX_URL": self.gateway, "NO_PROXY": "127.0.0.1,localhost",
                    "no_proxy": "127.0.0.1,localhost"})
        return env

    def start(self) -> "Server":
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
        env.update({"SANDBOXD_DATA_DIR": str(self.data_dir), "SANDBOXD_BACKEND": self.backend,
                    "SANDBOXD_API_KEY": self.api_key, "SANDBOXD_PORT": str(self.port),
                    "SANDBOXD_GATEWAY_PORT": str(self.port + 1),
                    "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
        if self.backend == "fake":
            # Fake agents are host processes: give them a user python that has ipykernel and matplotlib
            # (the test venv), as the code-interpreter template does inside a real sandbox.
            # The fake backend passes PATH (not SANDBOXD_*) to its agents, so the venv goes first on PATH.
            env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", os.defpath)
        else:
            env["SANDBOXD_TEMPLATES_PATH"] = SHARED_TEMPLATES
        log_path = self.data_dir / "serve.log"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "sandboxd.cli.main", "serve"], env=env, cwd=ROOT,
                                         stdout=log, stderr=log, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-1500:]
                self.proc = None
                unavailable(f"`sandboxd serve` exited at start-up: {tail.strip()}")
            try:
                if httpx.get(self.url + "/health", timeout=1, trust_env=False).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        unavailable("`sandboxd serve` did not answer /health within 60 s")
        return self

    def kill_all_sandboxes(self) -> None:
        try:
            with httpx.Client(base_url=self.url, headers={"X-API-Key": self.api_key}, timeout=30,
                              trust_env=False) as c:
                for _ in range(20):
                    items = c.get("/v1/sandboxes", params={"limit": 100}).json().get("data") or []
                    if not items:
                        return
                    for sb in items:
                        c.delete(f"/v1/sandboxes/{sb['id']}")
        except httpx.HTTPError:
            pass

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self._reap_fake_agents()

    def _reap_fake_agents(self) -> None:
        # Fake-backend agents are host processes started for this data dir: never leave one behind.
        needle = str(self.data_dir / "sandboxes")
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "sandboxd.agent" in cmd and needle in cmd:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass


def running_server(tmp_path_factory, backend: str = "fake"):
    """Generator body for fixtures: yields a started Server and always cleans up."""
    if backend == "fake":
        data_dir = tmp_path_factory.mktemp(f"roomF-{backend}")
    else:
        # Sandbox uids (100000+) must be able to traverse to their rootfs: pytest's tmp tree is 0700.
        import tempfile

        data_dir = Path(tempfile.mkdtemp(prefix=f"roomF-{backend}-", dir="/var/tmp"))
        data_dir.chmod(0o755)
    srv = Server(data_dir, backend)
    try:
        srv.start()
        yield srv
    finally:
        srv.kill_all_sandboxes()
        srv.stop()
        if backend != "fake":
            import shutil

            if not any((data_dir / "sandboxes").glob("*/rootfs/*")):  # never delete through a live mount
                shutil.rmtree(data_dir, ignore_errors=True)
