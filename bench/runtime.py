"""Runtime benchmark: sandboxd's crun backend against a bare `crun` on the same rootfs, in the same run.

    .venv/bin/python bench/runtime.py [--runs 20] [--idle 5] [--template base] [--backend crun]

For each of --runs sandboxes: create→agent healthy, exec round trip (`true` via `crun exec`), agent
/health round trip over the socket, pause, resume, destroy. Then --idle sandboxes are left idle and the
PSS of every process in each (/proc/<pid>/smaps_rollup) is summed. The floor does the same with a bare
`crun run -d` / `crun exec` / pause / resume / kill+delete of the template's rootfs (read-only, no overlay,
no user namespace, no agent: tini + a sleeping python3). Prints p50/p99 and the ratio; writes JSON to
bench/results/. Needs root and a built template. Asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sandboxd.config import Settings
from sandboxd.runtime import get_backend
from sandboxd.runtime.base import Resources, SandboxSpec
from sandboxd.runtime.cgroups import SandboxCgroup
from sandboxd.runtime.oci import channel
from sandboxd.templates.store import TemplateStore


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def pss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


async def timed(fn, *a, **kw) -> float:
    t = time.perf_counter()
    await fn(*a, **kw)
    return (time.perf_counter() - t) * 1000


async def bench_sandboxd(settings: Settings, image, runs: int, idle: int) -> dict:
    backend = get_backend(settings)
    ops: dict[str, list[float]] = {k: [] for k in ("create", "exec", "health", "pause", "resume", "destroy")}
    res = Resources(vcpu=1, memory_mb=512, disk_mb=512, pids=256)
    for i in range(runs):
        sid = f"rtbench-{uuid.uuid4().hex[:8]}"
        spec = SandboxSpec(id=sid, image=image, resources=res)
        ops["create"].append(await timed(backend.create, spec))
        ops["exec"].append(await timed(backend.exec, sid, ["true"]))
        sock = Path(settings.sandboxes_dir) / sid / "agent.sock"
        ops["health"].append(await timed(channel.health, sock))
        ops["pause"].append(await timed(backend.pause, sid))
        ops["resume"].append(await timed(backend.resume, sid))
        ops["destroy"].append(await timed(backend.destroy, sid))
    ids = [f"rtbench-idle-{uuid.uuid4().hex[:8]}" for _ in range(idle)]
    for sid in ids:
        await backend.create(SandboxSpec(id=sid, image=image, resources=res))
    await asyncio.sleep(2.0)  # let imports and first requests settle
    mem = [pss_kib(SandboxCgroup(sid).pids()) for sid in ids]
    for sid in ids:
        await backend.destroy(sid)
    return {"ops": ops, "idle_pss_kib": mem}


def bare_bundle(rootfs: Path, work: Path, args: list[str]) -> Path:
    bundle = work / uuid.uuid4().hex[:8]
    bundle.mkdir(parents=True)
    subprocess.run(["crun", "spec"], cwd=bundle, check=True)
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["root"] = {"path": str(rootfs), "readonly": True}
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = args
    (bundle / "config.json").write_text(json.dumps(cfg))
    return bundle


def bench_bare(rootfs: Path, runs: int, idle: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="rt-bare-", dir="/tmp"))
    root = work / "state"
    crun = ["crun", "--root", str(root)]
    args = ["/usr/bin/tini", "--", "python3", "-c", "import time; time.sleep(1e6)"]

    def run(*a: str) -> float:
        t = time.perf_counter()
        subprocess.run([*crun, *a], check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        return (time.perf_counter() - t) * 1000

    ops: dict[str, list[float]] = {k: [] for k in ("create", "exec", "pause", "resume", "destroy")}
    try:
        for _ in range(runs):
            cid = f"rtbare-{uuid.uuid4().hex[:8]}"
            bundle = bare_bundle(rootfs, work, args)
            ops["create"].append(run("run", "-d", "--bundle", str(bundle), cid))
            ops["exec"].append(run("exec", cid, "true"))
            ops["pause"].append(run("pause", cid))
            ops["resume"].append(run("resume", cid))
            t = time.perf_counter()
            subprocess.run([*crun, "kill", cid, "KILL"], check=True)
            subprocess.run([*crun, "delete", "--force", cid], check=True)
            ops["destroy"].append((time.perf_counter() - t) * 1000)
        cids = [f"rtbare-idle-{uuid.uuid4().hex[:8]}" for _ in range(idle)]
        for cid in cids:
            run("run", "-d", "--bundle", str(bare_bundle(rootfs, work, args)), cid)
        time.sleep(2.0)
        mem = []
        for cid in cids:
            state = json.loads(subprocess.run([*crun, "state", cid], capture_output=True, check=True).stdout)
            pids = [int(p) for p in Path(f"/sys/fs/cgroup/pids/{cid}/cgroup.procs").read_text().split()] \
                if Path(f"/sys/fs/cgroup/pids/{cid}").exists() else [state["pid"]]
            mem.append(pss_kib(pids))
        for cid in cids:
            subprocess.run([*crun, "delete", "--force", cid], check=False)
        return {"ops": ops, "idle_pss_kib": mem}
    finally:
        for cid in json.loads(subprocess.run([*crun, "list", "-f", "json"], capture_output=True).stdout or b"[]") or []:
            subprocess.run([*crun, "delete", "--force", cid["id"]], check=False)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--idle", type=int, default=5)
    ap.add_argument("--template", default="base")
    ap.add_argument("--backend", default="crun")
    a = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="rt-bench-", dir="/tmp"))
    templates = os.environ.get("SANDBOXD_TEMPLATES_PATH") or "/var/lib/sandboxd/templates"
    settings = Settings(data_dir=data, backend=a.backend, templates_path=Path(templates))
    image = TemplateStore(settings).get(a.template)
    try:
        ours = asyncio.run(bench_sandboxd(settings, image, a.runs, a.idle))
    finally:
        shutil.rmtree(data, ignore_errors=True)
    bare = bench_bare(image.layers[-1], a.runs, a.idle)

    rows = []
    print(f"{'operation':<22}{'sandboxd p50':>14}{'p99':>9}{'bare crun p50':>15}{'p99':>9}{'ratio p50':>11}")
    for op in ("create", "exec", "health", "pause", "resume", "destroy"):
        xs, fl = ours["ops"][op], bare["ops"].get(op)
        row = {"op": op, "p50_ms": pct(xs, .5), "p99_ms": pct(xs, .99),
               "floor_p50_ms": pct(fl, .5) if fl else None, "floor_p99_ms": pct(fl, .99) if fl else None}
        row["ratio_p50"] = row["p50_ms"] / row["floor_p50_ms"] if fl else None
        rows.append(row)
        label = {"create": "create→agent healthy", "exec": "exec round trip", "health": "agent /health"}.get(op, op)
        floor = f"{row['floor_p50_ms']:>15.1f}{row['floor_p99_ms']:>9.1f}{row['ratio_p50']:>10.1f}x" if fl else f"{'-':>15}{'-':>9}{'-':>11}"
        print(f"{label:<22}{row['p50_ms']:>14.1f}{row['p99_ms']:>9.1f}{floor}")
    m, fm = statistics.median(ours["idle_pss_kib"]), statistics.median(bare["idle_pss_kib"])
    print(f"{'idle PSS / sandbox':<22}{m / 1024:>13.1f}M{'':>9}{fm / 1024:>14.1f}M{'':>9}{m / fm:>10.1f}x")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"runtime-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"runs": a.runs, "template": a.template, "backend": a.backend, "rows": rows,
                                "idle_pss_kib": ours["idle_pss_kib"], "floor_idle_pss_kib": bare["idle_pss_kib"],
                                "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
