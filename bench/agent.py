"""Agent footprint and speed: start->healthy, idle PSS (kernel not started), requests/s, kernel latency.

    .venv/bin/python bench/agent.py [--runs 10] [--requests 300]

Runs the real agent (`python -I -m sandboxd.agent --unix ...`) on this host; prints figures, asserts nothing.
Targets (docs/performance.md): idle PSS <= 20 MiB, start->healthy <= 100 ms.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

SRC = str(Path(__file__).resolve().parents[1] / "src")


def spawn(sock: str, ws: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC, "SANDBOXD_AGENT_USER_PYTHON": sys.executable}
    return subprocess.Popen([sys.executable, "-I", "-m", "sandboxd.agent", "--unix", sock, "--workspace", ws],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def raw_health(sock: str) -> bool:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        s.close()
        return b'"healthy"' in data
    except OSError:
        return False


def cpu_ms(pid: int) -> float:
    """CPU time (user+sys) a process has used: unlike wall time, barely affected by other load."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def start_to_healthy(tmp: str) -> tuple[float, subprocess.Popen, str]:
    sock = os.path.join(tmp, f"a{time.monotonic_ns()}.sock")
    t0 = time.perf_counter()
    proc = spawn(sock, tmp)
    while not raw_health(sock):
        time.sleep(0.001)
    ms = (time.perf_counter() - t0) * 1000
    CPU.append(cpu_ms(proc.pid))
    return ms, proc, sock


CPU: list[float] = []


def pss_kib(pid: int) -> tuple[int, int]:
    vals = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Pss", "Rss"):
                vals[k] = int(v.split()[0])
    return vals["Pss"], vals["Rss"]


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rate(sock: str, n: int, concurrency: int, method: str, path: str, body=None) -> float:
    def worker(count: int) -> None:
        with httpx.Client(transport=httpx.HTTPTransport(uds=sock), base_url="http://agent", timeout=30) as c:
            for _ in range(count):
                r = c.request(method, path, json=body)
                assert r.status_code == 200
    per = n // concurrency
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(worker, [per] * concurrency))
    return per * concurrency / (time.perf_counter() - t0)


def real(runs: int, template: str) -> None:
    """The agent inside real crun sandboxes: create -> healthy (whole sandbox) and the agent's own PSS."""
    import asyncio
    import shutil
    import uuid

    from sandboxd.config import Settings
    from sandboxd.runtime import get_backend
    from sandboxd.runtime.base import SandboxSpec
    from sandboxd.templates.store import TemplateStore

    tpl = Path(os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates"))
    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="agb-", dir="/tmp")), backend="crun",
                        templates_path=tpl)
    backend = get_backend(settings)
    image = TemplateStore(settings).get(template)

    async def go() -> None:
        created, pss, cpu = [], [], []
        for _ in range(runs):
            sid = f"agent-bench-{uuid.uuid4().hex[:6]}"
            t0 = time.perf_counter()
            rs = await backend.create(SandboxSpec(id=sid, image=image))
            created.append((time.perf_counter() - t0) * 1000)
            try:
                kids = Path(f"/proc/{rs.pid}/task/{rs.pid}/children").read_text().split()
                agent = next(int(k) for k in kids if b"sandboxd.agent" in Path(f"/proc/{k}/cmdline").read_bytes())
                cpu.append(cpu_ms(agent))
                await asyncio.sleep(0.3)
                pss.append(pss_kib(agent)[0])
            finally:
                await backend.destroy(sid)
        print(f"[real {template}] create -> agent healthy median {statistics.median(created):.0f} ms "
              f"(min {min(created):.0f}); agent CPU time to healthy median {statistics.median(cpu):.0f} ms; "
              f"agent PSS in sandbox median {statistics.median(pss) / 1024:.1f} MiB")

    try:
        asyncio.run(go())
    finally:
        shutil.rmtree(settings.data_dir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--real", metavar="TEMPLATE", help="also measure inside real crun sandboxes (root)")
    args = ap.parse_args()
    if args.real:
        real(args.runs, args.real)
    with tempfile.TemporaryDirectory(prefix="sandboxd-bench-agent-") as tmp:
        times, pss, rss = [], [], []
        for _ in range(args.runs):
            ms, proc, sock = start_to_healthy(tmp)
            times.append(ms)
            with httpx.Client(transport=httpx.HTTPTransport(uds=sock), base_url="http://agent") as c:
                c.get("/metrics/snapshot")
                c.post("/commands/run", json={"command": "true"})
                c.get("/files/list", params={"path": tmp})
            time.sleep(0.2)
            p, r = pss_kib(proc.pid)
            pss.append(p)
            rss.append(r)
            stop(proc)
        base = []
        for code in ("pass", "import asyncio"):
            runs = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-I", "-c", code], check=True)
                runs.append((time.perf_counter() - t0) * 1000)
            base.append(statistics.median(runs))
        print(f"start -> healthy     median {statistics.median(times):7.1f} ms   "
              f"min {min(times):.1f}  max {max(times):.1f}   (target <= 100 ms, {args.runs} runs)")
        print(f"  CPU time used by the agent up to healthy: median {statistics.median(CPU):.0f} ms "
              f"(10 ms clock ticks; load-independent)")
        print(f"  floor on this host now: python -I -c pass {base[0]:.1f} ms, -c 'import asyncio' {base[1]:.1f} ms "
              f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        print(f"idle PSS (no kernel) median {statistics.median(pss) / 1024:7.1f} MiB  "
              f"RSS {statistics.median(rss) / 1024:.1f} MiB  (target <= 20 MiB; after health/metrics/command/list)")

        _, proc, sock = start_to_healthy(tmp)
        try:
            for conc in (1, 4):
                print(f"GET /health          {rate(sock, args.requests, conc, 'GET', '/health'):7.0f} req/s  "
                      f"(concurrency {conc})")
                body = {"command": "bash", "args": ["-c", "echo hi"]}
                print(f"POST /commands/run   {rate(sock, args.requests, conc, 'POST', '/commands/run', body):7.0f} "
                      f"req/s  (echo hi via bash -c, concurrency {conc})")
            with httpx.Client(transport=httpx.HTTPTransport(uds=sock), base_url="http://agent", timeout=120) as c:
                t0 = time.perf_counter()
                c.post("/execute", json={"code": "x = 1"})
                cold = (time.perf_counter() - t0) * 1000
                warm = []
                for _ in range(20):
                    t0 = time.perf_counter()
                    c.post("/execute", json={"code": "x += 1"})
                    warm.append((time.perf_counter() - t0) * 1000)
                p, _ = pss_kib(proc.pid)
            print(f"first Python exec    {cold:7.0f} ms  (kernel start, lazily)   "
                  f"warm exec median {statistics.median(warm):.1f} ms")
            print(f"agent PSS with kernel client loaded {p / 1024:.1f} MiB (the kernel is its own process)")
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
