"""Cost of the metrics sampler for N running sandboxes, as % of one CPU core.

Target (docs/performance.md): under 2 % of one core for 100 sandboxes at the default 1 s interval.

Each "sandbox" here is a real cgroup (cpu, cpuacct, memory, pids; v1 or v2 as the host has it) at the
path the crun backend uses (`sandboxd/<id>`), holding a sleeping process, a tmpfs mounted at its
`disk/` and a state.json record, so the real crun backend (`OciBackend`) reads it as one of its own.
The real Sampler writes every sample to a real SQLite store. Two runs: the backend's per-sandbox
`stats()` (the sampler's fallback), then its batched `stats_many()` (what the sampler uses). Needs root.

    .venv/bin/python bench/sampler.py [--sandboxes 100] [--seconds 20] [--interval 1]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from sandboxd.core.store import Store, make_engine, upgrade
from sandboxd.core.store.tables import SandboxRow
from sandboxd.monitor.sampler import Sampler
from sandboxd.monitor.series import SeriesStore
from sandboxd.config import Settings
from sandboxd.runtime.base import Resources, RuntimeState, SandboxSpec, Stats, TemplateImage
from sandboxd.runtime.cgroups import Layout, SandboxCgroup, detect
from sandboxd.runtime.oci.backend import OciBackend
from sandboxd.runtime.oci.state import Record, spec_to_dict

PREFIX = "monbench-"


class PerSandbox:
    """The backend without `stats_many`: the sampler then reads each sandbox with `stats()`."""

    def __init__(self, backend):
        self.backend = backend

    async def stats(self, sandbox_id: str) -> Stats:
        return await self.backend.stats(sandbox_id)

    async def state(self, sandbox_id: str):
        return RuntimeState.RUNNING


def make_records(settings: Settings, ids: list[str]) -> None:
    """A state.json per sandbox and a tmpfs at its disk/, as the crun backend leaves them."""
    image = TemplateImage(name="base", layers=(Path("/nonexistent"),), content_hash="bench")
    for sid in ids:
        d = Path(settings.sandboxes_dir) / sid
        (d / "disk").mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(d / "disk")], check=True)
        spec = SandboxSpec(id=sid, image=image, resources=Resources(vcpu=1.0, memory_mb=512, disk_mb=8, pids=256))
        Record(id=sid, runtime="crun", status="running", spec=spec_to_dict(spec)).save(d)


def remove_records(settings: Settings, ids: list[str]) -> None:
    for sid in ids:
        subprocess.run(["umount", str(Path(settings.sandboxes_dir) / sid / "disk")], check=False)


def make_cgroups(ids: list[str]) -> list[subprocess.Popen]:
    layout = detect()
    procs = []
    for sid in ids:
        cg = SandboxCgroup(sid, layout)
        ctrls = [""] if layout is Layout.V2 else ["cpu", "cpuacct", "memory", "pids"]
        dirs = {c: cg.dir(c) for c in ctrls}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        if layout is Layout.V2:
            (dirs[""] / "cpu.max").write_text("100000 100000")
            (dirs[""] / "memory.max").write_text(str(512 << 20))
        else:
            (dirs["cpu"] / "cpu.cfs_quota_us").write_text("100000")
            (dirs["memory"] / "memory.limit_in_bytes").write_text(str(512 << 20))
        p = subprocess.Popen(["sleep", "3600"])
        for d in dict.fromkeys(dirs.values()):
            (d / "cgroup.procs").write_text(str(p.pid))
        procs.append(p)
    return procs


def remove_cgroups(ids: list[str], procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()
    for sid in ids:
        SandboxCgroup(sid).remove()


def add_rows(store: Store, ids: list[str]) -> None:
    now = datetime.now(timezone.utc)
    with store.tx() as s:
        for sid in ids:
            s.add(SandboxRow(id=sid, status="running", template_id="t", template_name="base", region="local", node_id="bench",
                             vcpu=1.0, memory_mb=512, disk_mb=2048, internet_access=False, env_vars={}, metadata_={},
                             timeout_seconds=3600, created_at=now, started_at=now, token_version=1))


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)  # all threads: the to_thread workers are counted too
    return r.ru_utime + r.ru_stime


async def measure(sampler: Sampler, seconds: float) -> tuple[float, float, list[float]]:
    await sampler.tick()  # prime the CPU counters (first readings write nothing)
    durations: list[float] = []
    c0, w0 = cpu_seconds(), time.monotonic()
    task = asyncio.create_task(sampler.run())
    end = w0 + seconds
    ticks = sampler.ticks
    while time.monotonic() < end:
        await sampler.wait_tick()
        if sampler.ticks > ticks:
            durations.append(sampler.last_duration)
            ticks = sampler.ticks
    c1, w1 = cpu_seconds(), time.monotonic()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return c1 - c0, w1 - w0, durations


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sandboxes", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--interval", type=float, default=1.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (creates cgroups)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="sandboxd-bench-sampler-"))
    settings = Settings(data_dir=tmp / "data", backend="crun")
    ids = [f"{PREFIX}{os.getpid()}-{i:03d}" for i in range(args.sandboxes)]
    procs = make_cgroups(ids)
    make_records(settings, ids)
    backend = OciBackend(settings, runtime="crun")
    try:
        engine = make_engine(f"sqlite:///{tmp / 'bench.db'}")
        import sandboxd.core.store.monitoring  # noqa: F401
        upgrade(engine)
        store = Store(engine)
        add_rows(store, ids)
        series = SeriesStore(store, retention_seconds=7 * 86400)
        print(f"sandboxes {args.sandboxes} (real cgroups, layout {detect().value}), interval {args.interval:.2f} s")
        for label, reader in (("crun backend, per-sandbox stats() (fallback)", PerSandbox(backend)),
                              ("crun backend, batched stats_many() (used)", backend)):
            sampler = Sampler(store, reader, series, interval=args.interval)
            cpu, wall, durations = asyncio.run(measure(sampler, args.seconds))
            durations.sort()
            pct = cpu / wall * 100
            print(f"{label}:")
            print(f"  sampler CPU   {cpu * 1000:.0f} ms over {wall:.1f} s ({len(durations)} ticks) = {pct:.2f} % of one core"
                  f" (target < 2 %)")
            if durations:
                print(f"  tick wall     median {durations[len(durations) // 2] * 1000:.1f} ms, max {durations[-1] * 1000:.1f} ms;"
                      f" {cpu / max(1, len(durations)) / args.sandboxes * 1e6:.0f} us CPU per sandbox per tick")
        with store.tx() as s:
            from sqlalchemy import func, select
            from sandboxd.core.store.monitoring import SampleRow
            print(f"samples stored {s.scalar(select(func.count()).select_from(SampleRow))}")
        engine.dispose()
    finally:
        remove_records(settings, ids)
        remove_cgroups(ids, procs)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
