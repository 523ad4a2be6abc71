"""Cost of the metrics sampler for N running sandboxes, as % of one CPU core.

Target (issue 5): under 2 % of one core for 100 sandboxes at the default 1 s interval.

Each "sandbox" here is a real cgroup (cpu, cpuacct, memory, pids; v1 or v2 as the host has it) at the
path the crun backend uses (`sandboxd/<id>`), holding a sleeping process, plus a directory standing
for its disk. The backend below reads them with the runtime's own `SandboxCgroup.counters()` and
`statvfs`, exactly as the crun backend's `stats()` does, and the real Sampler writes every sample
to a real SQLite store. Needs root.

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
from sandboxd.runtime.base import RuntimeState, Stats
from sandboxd.runtime.cgroups import Layout, SandboxCgroup, detect

PREFIX = "monbench-"


def _read(path: str, size: int = 64) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


def _int(path: str, default: int = 0) -> int:
    try:
        v = _read(path).strip()
    except OSError:
        return default
    return default if v in (b"", b"max") else int(v)


class CgroupBackend:
    """Reads real cgroups two ways. `stats()` is the shape of the crun backend's today: per sandbox, two
    thread hops and the runtime's `SandboxCgroup.counters()`. `stats_many()` is the batched reader this
    benchmark proposes to the runtime room: one thread hop per tick, raw os.read of five files per sandbox,
    limits (quota, memory limit) re-read only every 30 s since they change only on an update."""

    def __init__(self, disk_root: Path, batched: bool):
        self.layout = detect()
        self.disk_root = disk_root
        if not batched:
            self.stats_many = None  # the sampler then falls back to stats() per sandbox
        self._limits: dict[str, tuple[float, float, int]] = {}  # id -> (read at, quota cores, memory limit)

    async def stats(self, sandbox_id: str) -> Stats:
        c = await asyncio.to_thread(SandboxCgroup(sandbox_id, self.layout).counters)
        st = await asyncio.to_thread(os.statvfs, self.disk_root / sandbox_id)
        return Stats(cpu_usage_ns=c.cpu_usage_ns, cpu_quota_cores=c.cpu_quota_cores, memory_used_bytes=c.memory_used_bytes,
                     memory_limit_bytes=c.memory_limit_bytes, memory_cache_bytes=c.memory_cache_bytes,
                     disk_used_bytes=(st.f_blocks - st.f_bfree) * st.f_frsize, disk_limit_bytes=st.f_blocks * st.f_frsize,
                     pids=c.pids, oom_kills=c.oom_kills)

    async def stats_many(self, ids: list[str]) -> dict[str, Stats | BaseException]:
        return await asyncio.to_thread(self._read_many, ids)

    def _read_many(self, ids: list[str]) -> dict[str, Stats | BaseException]:
        assert self.layout is not Layout.V2, "the batched reader here is written for cgroup v1"
        out: dict[str, Stats | BaseException] = {}
        now = time.monotonic()
        for sid in ids:
            try:
                base = f"/sys/fs/cgroup/%s/sandboxd/{sid}/"
                lim = self._limits.get(sid)
                if lim is None or now - lim[0] > 30:
                    quota = _int(base % "cpu" + "cpu.cfs_quota_us", -1)
                    period = _int(base % "cpu" + "cpu.cfs_period_us", 100000) or 100000
                    lim = self._limits[sid] = (now, 0.0 if quota < 0 else quota / period,
                                               _int(base % "memory" + "memory.limit_in_bytes"))
                mem = dict(line.split(b" ", 1) for line in _read(base % "memory" + "memory.stat", 8192).splitlines())
                oom = _read(base % "memory" + "memory.oom_control", 256)
                st = os.statvfs(self.disk_root / sid)
                out[sid] = Stats(
                    cpu_usage_ns=_int(base % "cpuacct" + "cpuacct.usage"), cpu_quota_cores=lim[1],
                    memory_used_bytes=max(0, _int(base % "memory" + "memory.usage_in_bytes") - int(mem.get(b"total_inactive_file", 0))),
                    memory_limit_bytes=lim[2], memory_cache_bytes=int(mem.get(b"total_cache", 0)),
                    disk_used_bytes=(st.f_blocks - st.f_bfree) * st.f_frsize, disk_limit_bytes=st.f_blocks * st.f_frsize,
                    pids=_int(base % "pids" + "pids.current"),
                    oom_kills=int(oom.rsplit(b"oom_kill ", 1)[1].split()[0]) if b"oom_kill " in oom else 0)
            except (OSError, ValueError) as exc:
                out[sid] = exc
        return out

    async def state(self, sandbox_id: str):
        return RuntimeState.RUNNING


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
    ids = [f"{PREFIX}{os.getpid()}-{i:03d}" for i in range(args.sandboxes)]
    for sid in ids:
        (tmp / "disks" / sid).mkdir(parents=True)
    procs = make_cgroups(ids)
    try:
        engine = make_engine(f"sqlite:///{tmp / 'bench.db'}")
        import sandboxd.core.store.monitoring  # noqa: F401
        upgrade(engine)
        store = Store(engine)
        add_rows(store, ids)
        series = SeriesStore(store, retention_seconds=7 * 86400)
        print(f"sandboxes {args.sandboxes} (real cgroups, layout {detect().value}), interval {args.interval:.2f} s")
        for label, batched in (("per-sandbox stats() (crun backend today)", False), ("batched stats_many()", True)):
            sampler = Sampler(store, CgroupBackend(tmp / "disks", batched), series, interval=args.interval)
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
        remove_cgroups(ids, procs)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
