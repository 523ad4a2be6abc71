"""Cold create → first exec, two checkouts of sandboxd interleaved run by run, so load on a shared host hits
both alike (bench/run.py's rows drift with whatever else the host does between them).

    .venv/bin/python bench/ab_create.py --a /path/to/old/src --b /path/to/new/src [--runs 40] [--template base]

Each side is a child process importing sandboxd from its src dir, with its own scratch data dir and the
shared template store (SANDBOXD_TEMPLATES_PATH or /var/lib/sandboxd/templates). Per run: backend.create (cold,
zygote as configured), exec `true`, destroy; the create+exec wall time is the figure. Prints p50/p95/p99 per
side and the ratio of p50s; JSON goes to bench/results/ab-create-<time>.json. Needs root; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import asyncio, json, os, shutil, sys, tempfile, time, uuid
from pathlib import Path
from sandboxd.config import Settings
from sandboxd.runtime import get_backend
from sandboxd.runtime.base import Resources, SandboxSpec
from sandboxd.templates.store import TemplateStore
data = Path(tempfile.mkdtemp(prefix="ab-", dir="/tmp"))
os.chmod(data, 0o755)
templates = Path(os.environ.get("SANDBOXD_TEMPLATES_PATH") or "/var/lib/sandboxd/templates")
settings = Settings(data_dir=data, backend="crun", templates_path=templates)
image = TemplateStore(settings).get(sys.argv[1])
backend = get_backend(settings)
async def one():
    sid = "ab-" + uuid.uuid4().hex[:10]
    t = time.perf_counter()
    await backend.create(SandboxSpec(id=sid, image=image, resources=Resources(vcpu=1.0, memory_mb=512, disk_mb=2048, pids=256)))
    r = await backend.exec(sid, ["true"])
    ms = (time.perf_counter() - t) * 1000
    await backend.destroy(sid)
    assert r.exit_code == 0
    return ms
async def main():
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        print(json.dumps(await one()), flush=True)
    await backend.close()
    shutil.rmtree(data, ignore_errors=True)
asyncio.run(main())
"""


def pct(xs: list[float]) -> list[float]:
    xs = sorted(xs)
    return [round(xs[min(len(xs) - 1, int(q * len(xs)))], 1) for q in (0.5, 0.95, 0.99)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True, help="src dir of the first checkout (the baseline)")
    ap.add_argument("--b", required=True, help="src dir of the second checkout")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--template", default="base")
    args = ap.parse_args()
    kids = {}
    for side in ("a", "b"):
        env = {**os.environ, "PYTHONPATH": getattr(args, side)}
        kids[side] = subprocess.Popen([sys.executable, "-c", CHILD, args.template], env=env, text=True,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out: dict[str, list[float]] = {"a": [], "b": []}
    try:
        for i in range(args.runs + 2):  # the first of each side warms the blank disk, bpf cache and zygote
            for side in (("a", "b") if i % 2 == 0 else ("b", "a")):
                kids[side].stdin.write("go\n")
                kids[side].stdin.flush()
                ms = json.loads(kids[side].stdout.readline())
                if i >= 2:
                    out[side].append(ms)
    finally:
        for kid in kids.values():
            kid.stdin.close()
            kid.wait(timeout=120)
    rows = {side: pct(v) for side, v in out.items()}
    for side in ("a", "b"):
        print(f"{side} {getattr(args, side)}: create -> first exec p50/p95/p99 ms {rows[side]}")
    print(f"b/a p50: {rows['b'][0] / rows['a'][0]:.3f}")
    res = Path(__file__).resolve().parent / "results" / f"ab-create-{time.strftime('%Y%m%dT%H%M%S')}.json"
    res.parent.mkdir(exist_ok=True)
    res.write_text(json.dumps({"args": vars(args), "rows": rows, "raw": out}, indent=1))
    print(f"wrote {res}")


if __name__ == "__main__":
    main()
