"""What a per-sandbox host uid range costs a sandbox's root: SandboxRoot.create + unmount with the layers and
disk idmapped to the sandbox's own range, against the same in the store's range (no idmap), interleaved.

    .venv/bin/python bench/uidmap.py [--runs 40] [--disk-mb 2048] [--template base]

Rows (p50 / p95 / p99 ms): root prepare (blank copy, loop mount, idmapped view, overlay), unmount. The first
idmapped run of a range also makes its user namespace (a fork, cached after). Needs root and a built
template; asserts nothing; JSON goes to bench/results/uidmap-<time>.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from sandboxd.config import Settings
from sandboxd.runtime import rootfs, uidslots
from sandboxd.templates.store import TemplateStore


def pct(xs: list[float]) -> list[float]:
    xs = sorted(xs)
    return [round(xs[min(len(xs) - 1, int(q * len(xs)))], 2) for q in (0.5, 0.95, 0.99)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--disk-mb", type=int, default=2048)
    ap.add_argument("--template", default="base")
    args = ap.parse_args()
    settings = Settings()
    layers = TemplateStore(settings).get(args.template).layers
    work = Path(tempfile.mkdtemp(prefix="uidmap-", dir="/tmp"))
    out: dict[str, list[float]] = {f"{k}_{p}": [] for k in ("store_range", "own_range") for p in ("create", "umount")}
    try:
        for i in range(args.runs):
            for kind, slot in (("store_range", 0), ("own_range", 1 + i % 4)):
                d = work / f"{kind}-{i}"
                d.mkdir()
                ids = rootfs.Ids(settings.uid_base, uidslots.base(settings, slot), settings.uid_count)
                root = rootfs.SandboxRoot(d, layers, ids)
                t = time.perf_counter()
                root.create(args.disk_mb, cache_dir=work / "cache")
                out[f"{kind}_create"].append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                root.unmount()
                out[f"{kind}_umount"].append((time.perf_counter() - t) * 1000)
                shutil.rmtree(d)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = {k: pct(v[1:]) for k, v in out.items()}  # the first run makes the blank disk image
    for k, v in rows.items():
        print(f"{k:22s} p50/p95/p99 ms {v[0]:7.2f} {v[1]:7.2f} {v[2]:7.2f}   mean {statistics.mean(out[k][1:]):.2f}")
    res = Path(__file__).resolve().parent / "results" / f"uidmap-{time.strftime('%Y%m%dT%H%M%S')}.json"
    res.parent.mkdir(exist_ok=True)
    res.write_text(json.dumps({"args": vars(args), "rows": rows, "raw": out}, indent=1))
    print(f"wrote {res}")


if __name__ == "__main__":
    main()
