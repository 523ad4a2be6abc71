"""Agent start-up benchmark: what one cold sandbox pays for the agent's Python start, inside real crun.

    .venv/bin/python bench/agent_start.py [--runs 30] [--template base] [--label NAME] [--compare DIR]

For each of --runs sandboxes (OciBackend, scratch data dir): wall from `backend.create` start to a healthy
`/health`, the agent process's CPU when healthy and after the first `POST /commands/run {"true"}`
(schedstat on-CPU ns summed over its threads; utime+stime from /proc/<pid>/stat only has 10 ms ticks),
the whole sandbox cgroup's CPU (cpuacct.usage: tini + agent + the command's children), the first and
second command latency over the agent socket, and the agent's PSS once idle. Prints p50/p95 and writes
JSON to bench/results/agent-start-*.json. Needs root and a built template. Asserts nothing.

--compare DIR (a directory holding another `sandboxd` package, e.g. a copy of an older tree) alternates
sandbox by sandbox between this tree's agent and DIR/sandboxd's, so both columns see the same machine load
(on a shared 2-core box, back-to-back runs differ by more than the effect being measured). Keep the copy's
__pycache__ fresh (`python -m compileall DIR`): the package is mounted read-only, so a stale .pyc makes
every sandbox compile that module again.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sandboxd
from sandboxd.config import Settings
from sandboxd.runtime import get_backend
from sandboxd.runtime.base import Resources, SandboxSpec
from sandboxd.templates.store import TemplateStore


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def agent_pid(sid: str) -> int | None:
    for p in Path(f"/sys/fs/cgroup/pids/sandboxd/{sid}/cgroup.procs").read_text().split():
        try:
            # tini's argv names the agent too; the agent is the python process
            if Path(f"/proc/{p}/comm").read_text().startswith("python") and \
                    b"sandboxd.agent" in Path(f"/proc/{p}/cmdline").read_bytes():
                return int(p)
        except OSError:
            pass
    return None


def cpu_ms(pid: int) -> float:
    """On-CPU time of every thread of pid (schedstat's first field is ns)."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()[0])
        except OSError:
            pass
    return total / 1e6


def ticks_ms(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def cgroup_cpu_ms(sid: str) -> float | None:
    for p in (f"/sys/fs/cgroup/cpuacct/sandboxd/{sid}/cpuacct.usage", f"/sys/fs/cgroup/cpu,cpuacct/sandboxd/{sid}/cpuacct.usage"):
        try:
            return int(Path(p).read_text()) / 1e6
        except OSError:
            continue
    return None


def pss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def run_true(sock: Path) -> float:
    body = json.dumps({"command": "bash", "args": ["-c", "true"]}).encode()
    t = time.perf_counter()
    reader, writer = await asyncio.open_unix_connection(str(sock))
    writer.write(b"POST /commands/run HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    raw = await reader.read()
    writer.close()
    ms = (time.perf_counter() - t) * 1000
    head, _, resp = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") or json.loads(resp).get("exit_code") != 0:
        raise RuntimeError(f"first command failed: {raw[:300]!r}")
    return ms


KEYS = ("healthy_ms", "cpu_healthy_ms", "ticks_healthy_ms", "cgroup_cpu_healthy_ms", "first_cmd_ms",
        "cpu_first_cmd_ms", "cgroup_cpu_first_cmd_ms", "second_cmd_ms", "pss_mib")


async def bench(settings: Settings, image, runs: int, pkgs: list[Path]) -> list[dict[str, list[float]]]:
    backend = get_backend(settings)
    res = Resources(vcpu=1, memory_mb=512, disk_mb=512, pids=256)
    outs: list[dict[str, list[float]]] = [{k: [] for k in KEYS} for _ in pkgs]
    try:
        for i in range(runs * len(pkgs)):
            out = outs[i % len(pkgs)]
            backend.agent_pkg = pkgs[i % len(pkgs)]  # the host directory mounted at /opt/sandboxd/pkg/sandboxd
            sid = f"agentstart-{uuid.uuid4().hex[:8]}"
            t = time.perf_counter()
            view = await backend.create(SandboxSpec(id=sid, image=image, resources=res))
            out["healthy_ms"].append((time.perf_counter() - t) * 1000)
            try:
                pid = agent_pid(sid)
                out["cpu_healthy_ms"].append(cpu_ms(pid))
                out["ticks_healthy_ms"].append(ticks_ms(pid))
                out["cgroup_cpu_healthy_ms"].append(cgroup_cpu_ms(sid) or 0.0)
                out["first_cmd_ms"].append(await run_true(view.agent_socket))
                out["cpu_first_cmd_ms"].append(cpu_ms(pid))
                out["cgroup_cpu_first_cmd_ms"].append(cgroup_cpu_ms(sid) or 0.0)
                out["second_cmd_ms"].append(await run_true(view.agent_socket))
                await asyncio.sleep(0.3)  # let the agent go idle before reading its memory
                out["pss_mib"].append(pss_mib(pid))
            finally:
                await backend.destroy(sid)
    finally:
        await backend.close()
    return outs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--template", default="base")
    ap.add_argument("--label", default="")
    ap.add_argument("--compare", type=Path, help="directory holding another sandboxd package to alternate with")
    a = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="agentstart-", dir="/tmp"))
    templates = os.environ.get("SANDBOXD_TEMPLATES_PATH") or "/var/lib/sandboxd/templates"
    settings = Settings(data_dir=data, templates_path=Path(templates))
    image = TemplateStore(settings).get(a.template)
    pkgs = [Path(sandboxd.__file__).resolve().parent]
    if a.compare:
        pkgs.append((a.compare / "sandboxd").resolve())
    try:
        outs = asyncio.run(bench(settings, image, a.runs, pkgs))
    finally:
        shutil.rmtree(data, ignore_errors=True)
    load = os.getloadavg()[0]
    print(f"\nagent start-up, {a.runs} sandboxes of '{a.template}' per column {a.label} (load avg {load:.1f})")
    print(f"{'figure (ms, MiB)':<26}" + "".join(f"{'p50 / p95 / min  ' + str(p.parent)[-24:]:>44}" for p in pkgs))
    rows: dict[str, list[dict]] = {}
    for k in KEYS:
        rows[k] = [{"n": len(o[k]), "p50": pct(o[k], .5), "p95": pct(o[k], .95), "min": min(o[k])} for o in outs]
        print(f"{k:<26}" + "".join(f"{r['p50']:>24.1f} / {r['p95']:6.1f} / {r['min']:6.1f}" for r in rows[k]))
    res = Path(__file__).parent / "results"
    res.mkdir(exist_ok=True)
    path = res / f"agent-start-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"runs": a.runs, "template": a.template, "label": a.label, "loadavg": load,
                                "pkgs": [str(p) for p in pkgs], "rows": rows, "raw": outs, "host": {"cpus": os.cpu_count(),
                                                                   "python": sys.version.split()[0]}}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
