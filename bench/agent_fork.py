"""What a zygote could save: an agent forked from a process that already imported it, against the exec'd agent.

    .venv/bin/python bench/agent_fork.py [--runs 30]

Per run: fork the pre-imported process, the child runs the agent's normal `main()` on an inherited listening
unix socket; the parent sends `GET /health` and `POST /commands/run {"command": "true"}` and reads the
child's on-CPU time (schedstat of all its threads) once the command answered. Then the same with a fresh
`python -I -m sandboxd.agent` on the host. No namespaces, cgroup, capabilities or seccomp (what a real zygote
would add: a setns, a few cgroup writes and prctls, well under 1 ms), so this is an upper bound of the gain,
measured on the host's interpreter. Compare with bench/agent_start.py for the agent in a real sandbox.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sandboxd.agent.__main__ as agent_main  # noqa: E402
from agent_start import cpu_ms  # noqa: E402  (bench/agent_start.py: every thread's schedstat)
import sandboxd.agent.processes  # noqa: E402,F401  (what the first command needs, imported before the fork)
import sandboxd.agent.routes.commands  # noqa: E402,F401
import sandboxd.agent.routes.system  # noqa: E402,F401



def request(path: str, method: str, target: str, body: bytes = b"") -> bytes:
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(f"{method} {target} HTTP/1.1\r\nHost: a\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
              .encode() + body)
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    s.close()
    return out


def listening(path: str) -> socket.socket:
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.listen(16)
    return sock


def first_command(path: str, pid: int, t0: float) -> tuple[float, float]:
    assert b"healthy" in request(path, "GET", "/health")
    answer = request(path, "POST", "/commands/run", b'{"command": "true"}')
    assert b'"exit_code": 0' in answer, answer[:300]
    return cpu_ms(pid), (time.perf_counter() - t0) * 1000


def forked(path: str) -> tuple[float, float]:
    sock = listening(path)
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # the agent's "ready" line
        os.environ["SANDBOXD_AGENT_FD"] = str(sock.fileno())
        try:
            agent_main.main([])
        finally:
            os._exit(0)
    sock.close()
    try:
        return first_command(path, pid, t0)
    finally:
        os.kill(pid, 15)
        os.waitpid(pid, 0)


def execed(path: str) -> tuple[float, float]:
    sock = listening(path)
    t0 = time.perf_counter()
    env = {**os.environ, "SANDBOXD_AGENT_FD": "3", "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-m", "sandboxd.agent"], env=env, pass_fds=(sock.fileno(),),
                            preexec_fn=lambda: os.dup2(sock.fileno(), 3), stderr=subprocess.DEVNULL)
    sock.close()
    try:
        return first_command(path, proc.pid, t0)
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    a = ap.parse_args()
    gc.freeze()  # as a zygote would: the pre-imported heap is never collected in the children
    work = tempfile.mkdtemp(prefix="agent-fork-")
    out: dict[str, dict[str, list[float]]] = {k: {"cpu_ms": [], "wall_ms": []} for k in ("forked", "exec")}
    try:
        for i in range(a.runs):  # interleaved, so load drift hits both
            for kind, fn in (("forked", forked), ("exec", execed)):
                cpu, wall = fn(f"{work}/a{i}-{kind}.sock")
                out[kind]["cpu_ms"].append(cpu)
                out[kind]["wall_ms"].append(wall)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"agent to its first command answered, {a.runs} runs each, host interpreter (load {os.getloadavg()[0]:.1f})")
    for kind, d in out.items():
        c, w = d["cpu_ms"], d["wall_ms"]
        print(f"  {kind:7} CPU p50 {statistics.median(c):6.1f} ms (min {min(c):5.1f})   "
              f"wall p50 {statistics.median(w):6.1f} ms")
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    path = results / f"agent-fork-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"runs": a.runs, "loadavg": os.getloadavg(), "raw": out}, indent=1))
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
