"""The agent's lean start: route modules other than /health, /commands and /env load on their first
request, and nothing about the API changes because of it (404/405, /info's endpoint list, envd)."""
from __future__ import annotations

import contextlib
import subprocess
import sys

import httpx

from .conftest import SRC, free_port, start_agent, wait_healthy

# Imported by a fresh agent only when a request needs them (bench/agent_start.py measures why).
LAZY = ["sandboxd.agent.envd.routes", "sandboxd.agent.routes.execute", "sandboxd.agent.routes.files",
        "sandboxd.agent.routes.terminal", "sandboxd.agent.files",
        "sandboxd.agent.upload", "sandboxd.agent.execution", "sandboxd.agent.kernel", "argparse", "urllib.parse",
        "http"]


def test_start_imports_only_what_health_and_commands_need(tmp_path):
    code = ("import sys\n"
            "from sandboxd.agent.app import create_app\n"
            "from sandboxd.agent.services import Services\n"
            "import sandboxd.agent.__main__ as m\n"
            "m.parse_args(['--unix', '/x'])\n"
            f"create_app(Services(workspace={str(tmp_path)!r}))\n"
            f"print(' '.join(n for n in {LAZY!r} if n in sys.modules))\n")
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {SRC!r})\n" + code],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == []


@contextlib.contextmanager
def fresh_agent(workspace):
    """A newly started agent (nothing loaded lazily yet) and its base URL."""
    port = free_port()
    proc = start_agent(["--port", str(port)], workspace)
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as c:
            wait_healthy(c, proc)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def test_lazy_routes_answer_like_eager_ones(tmp_path):
    with fresh_agent(tmp_path) as base:
        with httpx.Client(base_url=base, timeout=30) as c:
            # a known path with the wrong method is still a 405 on a module not loaded yet
            r = c.get("/execute")
            assert r.status_code == 405 and r.json()["code"] == "METHOD_NOT_ALLOWED"
            assert c.get("/nowhere").status_code == 404
            assert c.post("/files/write", json={"path": str(tmp_path / "a.txt"), "content": "hi"}).status_code == 200
            assert c.get("/files/read", params={"path": str(tmp_path / "a.txt")}).json()["content"] == "hi"
            assert c.get("/e2b/49983/health").status_code in (200, 204)
            r = c.post("/execute", json={"code": "echo lazy", "language": "bash"})
            assert r.json()["stdout"] == "lazy\n"
        with httpx.Client(base_url=base, timeout=30) as c:
            endpoints = set(c.get("/info").json()["endpoints"])
        assert {"POST /commands/run", "GET /terminal", "POST /files/write",
                "POST /e2b/49983/process.Process/Start"} <= endpoints


def test_info_lists_lazy_routes_on_a_fresh_agent(tmp_path):
    with fresh_agent(tmp_path) as base:
        endpoints = set(httpx.get(base + "/info", timeout=30).json()["endpoints"])
        assert {"POST /execute", "GET /files/read", "GET /terminal", "GET /e2b/49983/files",
                "POST /e2b/49999/execute"} <= endpoints


FIRST_COMMAND = '''
import os, socket, sys, threading, time
sock_path, lazy = sys.argv[1], sys.argv[2].split()


def request(method, path, body=b""):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.sendall(f"{method} {path} HTTP/1.1\\r\\nHost: a\\r\\nContent-Length: {len(body)}\\r\\n"
              f"Connection: close\\r\\n\\r\\n".encode() + body)
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def probe():
    while not os.path.exists(sock_path):
        time.sleep(0.01)
    request("GET", "/health")
    answer = request("POST", "/commands/run", b'{"command": "true"}')
    print(b'"exit_code": 0' in answer, " ".join(m for m in lazy if m in sys.modules) or "-", flush=True)
    os._exit(0)


threading.Thread(target=probe, daemon=True).start()
sys.argv = ["sandboxd.agent", "--unix", sock_path]
import runpy
runpy.run_module("sandboxd.agent", run_name="__main__")
'''


def test_a_first_command_loads_no_kernel_or_file_machinery(tmp_path):
    """A sandbox that only runs commands (the common agent case) never pays for the execute/kernel modules."""
    lazy = ["sandboxd.agent.execution", "sandboxd.agent.kernel", "sandboxd.agent.files",
            "sandboxd.agent.routes.execute", "sandboxd.agent.envd.routes"]
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {SRC!r})\n" + FIRST_COMMAND,
                          str(tmp_path / "agent.sock"), " ".join(lazy)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.stdout.split() == ["True", "-"], out.stderr[-2000:]
