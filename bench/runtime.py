"""Runtime benchmark: sandboxd's crun backend against a bare `crun` on the same rootfs, in the same run.

    .venv/bin/python bench/runtime.py [--runs 20] [--idle 5] [--template base] [--backend crun]

For each of --runs sandboxes: create→agent healthy, exec round trip (`true` via `crun exec`), agent
/health round trip over the socket, pause, resume, destroy. Then --idle sandboxes are left idle and the
PSS of every process in each (/proc/<pid>/smaps_rollup) is summed. The floor does the same with a bare
`crun run -d` / `crun exec` / pause / resume / kill+delete of the template's rootfs (read-only, no overlay,
no user namespace, no agent: tini + a sleeping python3). Prints the table in bench/run.py's format
(figure, target, sandboxd p50/p95/p99, floor p50/p95/p99, what the floor is) plus the p50 ratio; writes
JSON rows of the same shape to bench/results/. Needs root and a built template. Asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
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
from sandboxd.runtime import agentclient
from sandboxd.templates.store import TemplateStore


def snapshot_backend(prefix: str, template: str, under: str = "/tmp"):
    """(settings, backend, image) for the memory-checkpoint benches, in a scratch data dir (exits without CRIU)."""
    data = Path(tempfile.mkdtemp(prefix=prefix, dir=under))
    data.chmod(0o755)
    settings = Settings(data_dir=data, backend="crun",
                        templates_path=Path(os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates")))
    backend = get_backend(settings)
    if not backend.memory_snapshots():
        sys.exit("no usable CRIU: run `sandboxd setup`")
    return settings, backend, TemplateStore(settings).get(template)


def save(name: str, out: dict) -> None:
    """Print the figures and keep them in bench/results/<name>-<time>.json."""
    print(json.dumps(out, indent=2))
    res = Path(__file__).resolve().parent / "results" / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    res.parent.mkdir(exist_ok=True)
    res.write_text(json.dumps(out, indent=2))
    print(f"-> {res}")


def host_cpu_ms() -> float:
    """Busy CPU of the whole host so far (all cores, neither idle nor iowait; /proc/stat's 10 ms ticks), in
    ms: crun's processes are not all our children and some of their work happens before a container's cgroup
    exists, so neither rusage nor a cgroup sees all of it."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    return (sum(f[:8]) - f[3] - f[4]) * 1000 / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def dist(xs: list[float] | None) -> dict | None:
    if not xs:
        return None
    return {"n": len(xs), "p50": pct(xs, .5), "p95": pct(xs, .95), "p99": pct(xs, .99), "min": min(xs)}


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
    for _ in range(runs):
        sid = f"rtbench-{uuid.uuid4().hex[:8]}"
        spec = SandboxSpec(id=sid, image=image, resources=res)
        t = time.perf_counter()
        view = await backend.create(spec)
        ops["create"].append((time.perf_counter() - t) * 1000)
        ops["exec"].append(await timed(backend.exec, sid, ["true"]))
        ops["health"].append(await timed(agentclient.health, view.agent_socket))
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
    await backend.close()  # leaves nothing under /run/sandboxd
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


FIGURES = (  # op, figure, what the floor is
    ("create", "create → agent healthy", "crun run -d (ro rootfs, no userns/seccomp/agent)"),
    ("exec", "exec round trip (`true`)", "crun exec true"),
    ("health", "agent /health over the socket", None),
    ("pause", "pause", "crun pause"),
    ("resume", "resume", "crun resume"),
    ("destroy", "destroy", "crun kill + delete --force"),
)


def table(ours: dict, bare: dict) -> list[dict]:
    rows = []
    for op, figure, floor in FIGURES:
        xs, fl = dist(ours["ops"][op]), dist(bare["ops"].get(op))
        rows.append({"figure": figure, "target": "-", "sandboxd_ms": xs, "floor": floor or "-", "floor_ms": fl,
                     "ratio_p50": xs["p50"] / fl["p50"] if fl else None})
    m, fm = dist([k / 1024 for k in ours["idle_pss_kib"]]), dist([k / 1024 for k in bare["idle_pss_kib"]])
    rows.append({"figure": "idle PSS per sandbox", "target": "-", "sandboxd_mib": m,
                 "floor": "tini + sleeping python3, bare crun", "floor_mib": fm, "ratio_p50": m["p50"] / fm["p50"]})
    return rows


def show(rows: list[dict]) -> None:
    """Same layout as bench/run.py's table, plus the p50 ratio to the floor."""
    f = lambda d: "-" if not d else f"{d['p50']:.1f} / {d['p95']:.1f} / {d['p99']:.1f}"
    print(f"\n{'figure':<46} {'target':<20} {'sandboxd p50/p95/p99':<24} {'floor p50/p95/p99':<24} "
          f"{'ratio p50':<10} floor is")
    for r in rows:
        unit = " MiB" if "sandboxd_mib" in r else ""
        ours, floor = (r["sandboxd_mib"], r["floor_mib"]) if unit else (r["sandboxd_ms"], r["floor_ms"])
        ratio = f"{r['ratio_p50']:.1f}x" if r["ratio_p50"] else "-"
        print(f"{r['figure']:<46} {r['target']:<20} {f(ours) + unit:<24} {f(floor) + unit:<24} {ratio:<10} {r['floor']}")


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

    rows = table(ours, bare)
    show(rows)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"runtime-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"runs": a.runs, "template": a.template, "backend": a.backend, "rows": rows,
                                "idle_pss_kib": ours["idle_pss_kib"], "floor_idle_pss_kib": bare["idle_pss_kib"],
                                "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
