"""Create latency and idle memory of a sandbox from an image without Python (busybox only: the agent starts cold
on its own runtime, bound at /opt/sandboxd/rt) against one from the built-in `base`, with its zygote (the
default) and without (`base-cold`: the agent exec'd on base's own Python), in one run.

    .venv/bin/python bench/agent_runtime.py [--runs 15] [--idle 4] [--settle 5]

The busybox image (tests/support/images.py) is imported into a scratch store whose `base` is the shared
store's (SANDBOXD_TEMPLATES_PATH or /var/lib/sandboxd/templates), linked. Per run one sandbox of each, in
turn (base-cold through a second backend, zygote off, on a data dir of its own): create (until the agent answers) + exec `true`, then destroy. Then --idle sandboxes of each stay idle
for --settle seconds and each one's cgroup is read: memory.current (v1: memory.usage_in_bytes), the same
less inactive file pages (what the API reports as used), and the PSS of its processes. Prints p50/p95 per
figure; JSON to bench/results/agent-runtime-<time>.json. Needs root, umoci, busybox-static. Asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sandboxd.config import Settings
from sandboxd.runtime import get_backend
from sandboxd.runtime.base import Resources, SandboxSpec
from sandboxd.runtime.cgroups import Layout, SandboxCgroup
from sandboxd.templates.steps import parse_build_request
from sandboxd.templates.store import TemplateStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from runtime import dist, pss_kib  # noqa: E402  (bench/runtime.py)
from support.images import busybox_layout  # noqa: E402

SHARED = Path("/var/lib/sandboxd/templates")
RES = Resources(vcpu=1, memory_mb=512, disk_mb=512, pids=256)


async def images(work: Path) -> dict:
    import os

    shared = TemplateStore(Settings(templates_path=Path(os.environ.get("SANDBOXD_TEMPLATES_PATH") or SHARED)))
    store = TemplateStore(Settings(data_dir=work / "data", templates_path=work / "templates", import_dir=work))
    store.layers_dir.mkdir(parents=True)
    base = shared.get("base")
    (store.layers_dir / base.content_hash).symlink_to(shared.layers_dir / base.content_hash)
    store.save_image(base, builtin=True)
    busybox_layout(work / "layout")
    busybox = await store.build(parse_build_request({"name": "bench-busybox", "from_image": "oci:layout:v1",
                                                     "steps": [{"type": "ENV", "args": ["A", "1"]}]}))
    cold = Settings(data_dir=work / "cold", templates_path=work / "templates", zygote=False)
    return {"base": base, "base-cold": base, "busybox": busybox, "settings": store.settings, "cold": cold}


def memory(sid: str) -> dict:
    cg = SandboxCgroup(sid)
    raw = cg.dir("memory") / ("memory.current" if cg.layout is Layout.V2 else "memory.usage_in_bytes")
    return {"current_kib": int(raw.read_text()) // 1024, "used_kib": cg.counters().memory_used_bytes // 1024,
            "pss_kib": pss_kib(cg.pids())}


async def main(runs: int, idle: int, settle: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-rt-", dir="/var/tmp"))
    work.chmod(0o755)
    try:
        got = await images(work)
        warm, cold = get_backend(got["settings"]), get_backend(got["cold"])
        names = ("base", "base-cold", "busybox")
        of = {"base": warm, "base-cold": cold, "busybox": warm}
        out: dict = {n: {"create_ms": [], "idle": []} for n in names}
        for name in names:  # one each first: the zygote's start, the runtime's host mount, page cache
            sid = f"rtb-warm-{uuid.uuid4().hex[:6]}"
            await of[name].create(SandboxSpec(id=sid, image=got[name], resources=RES))
            await of[name].destroy(sid)
        for _ in range(runs):
            for name in names:
                sid = f"rtb-{uuid.uuid4().hex[:8]}"
                t = time.perf_counter()
                await of[name].create(SandboxSpec(id=sid, image=got[name], resources=RES))
                await of[name].exec(sid, ["true"])
                out[name]["create_ms"].append((time.perf_counter() - t) * 1000)
                await of[name].destroy(sid)
        ids = {n: [f"rtb-idle-{uuid.uuid4().hex[:8]}" for _ in range(idle)] for n in names}
        for i in range(idle):
            for name in names:
                await of[name].create(SandboxSpec(id=ids[name][i], image=got[name], resources=RES))
        await asyncio.sleep(settle)
        for name in names:
            out[name]["idle"] = [memory(sid) for sid in ids[name]]
            for sid in ids[name]:
                await of[name].destroy(sid)
        await warm.close()
        await cold.close()
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def show(out: dict) -> list[dict]:
    rows = []
    for name, got in out.items():
        row = {"image": name, "create_exec_ms": dist(got["create_ms"])}
        for k in ("current_kib", "used_kib", "pss_kib"):
            row[k] = dist([float(m[k]) for m in got["idle"]])
        rows.append(row)
    print(f"{'image':9} {'create+exec ms p50/p95':>24} {'memory.current MiB':>20} {'used MiB':>10} {'PSS MiB':>9}")
    for r in rows:
        c = r["create_exec_ms"]
        mib = [r[k]["p50"] / 1024 for k in ("current_kib", "used_kib", "pss_kib")]
        print(f"{r['image']:9} {c['p50']:>15.0f} / {c['p95']:<6.0f} {mib[0]:>20.1f} {mib[1]:>10.1f} {mib[2]:>9.1f}")
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--idle", type=int, default=4)
    ap.add_argument("--settle", type=float, default=5.0)
    a = ap.parse_args()
    rows = show(asyncio.run(main(a.runs, a.idle, a.settle)))
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / f"agent-runtime-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(rows, indent=1))
