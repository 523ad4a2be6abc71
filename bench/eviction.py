"""More sandboxes than RAM (docs/snapshots.md): how many idle sandboxes this host holds on disk against how many
fit in its RAM, measured in the same run.

    .venv/bin/python bench/eviction.py [--count 2000] [--ram-sample 40] [--template base] [--workers 2]

Steps (real sandboxes through the backend, as the evictor calls it):
  RAM floor     --ram-sample idle sandboxes running: the host's MemAvailable before and after, per sandbox
  evicted       --count sandboxes created, each written to disk once its agent answered (what eviction does):
                create and checkpoint times, and each one's footprint on disk (its directory, allocated blocks:
                the sparse disk image and the checkpoint images); MemAvailable before and after
  restore       20 evicted sandboxes, picked at random, restored: restore -> first command
From these: sandboxes that fit in RAM (MemTotal / RAM per idle sandbox) and on this disk (free space / disk per
evicted sandbox), and their ratio (target: at least 5x). Asserts nothing; JSON goes to
bench/results/eviction-<time>.json.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime import dist, save, snapshot_backend  # noqa: E402  (bench/runtime.py)

from sandboxd.core.eviction import mem_available_mb  # noqa: E402
from sandboxd.runtime import agentclient  # noqa: E402
from sandboxd.runtime.base import Resources, SandboxSpec  # noqa: E402


def mem_total_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def allocated_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-s", "--block-size=1", str(path)], capture_output=True, text=True).stdout
    return int(out.split()[0]) if out else 0


async def first_command(sock: Path) -> None:
    r = await agentclient.call_json(sock, "POST", "/commands/run", {"command": "true"}, 60.0)
    assert r["exit_code"] == 0, r


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--ram-sample", type=int, default=40)
    ap.add_argument("--template", default="base")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    settings, backend, image = snapshot_backend("bench-evict-", a.template, "/var/tmp")
    data = Path(settings.data_dir)
    out: dict = {"template": a.template, "count": a.count, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def spec() -> SandboxSpec:
        return SandboxSpec(id=f"be-{uuid.uuid4().hex[:10]}", image=image,
                           resources=Resources(vcpu=0.5, memory_mb=256, disk_mb=256, pids=128))

    ids: list[str] = []
    try:
        before = mem_available_mb()
        running = []
        for _ in range(a.ram_sample):
            rt = await backend.create(spec())
            await first_command(rt.agent_socket)
            running.append(rt.id)
        await asyncio.sleep(2)
        per_ram = (before - mem_available_mb()) / a.ram_sample
        out["ram_floor"] = {"idle_sandboxes": a.ram_sample, "mem_available_drop_mib_per_sandbox": round(per_ram, 2)}
        for sid in running:
            await backend.destroy(sid)
        await asyncio.sleep(2)
        before = mem_available_mb()
        creates, checkpoints, sizes = [], [], []
        queue = list(range(a.count))

        async def worker() -> None:
            while queue:
                queue.pop()
                t = time.perf_counter()
                rt = await backend.create(spec())
                await first_command(rt.agent_socket)
                creates.append((time.perf_counter() - t) * 1000)
                cp = await backend.checkpoint(rt.id, compress=True)  # as the evictor does
                checkpoints.append(cp.seconds * 1000)
                sizes.append(cp.size_bytes)
                ids.append(rt.id)
                if len(ids) % 100 == 0:
                    print(f"{len(ids)} on disk, MemAvailable {mem_available_mb()} MiB", flush=True)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(a.workers)))
        wall = time.perf_counter() - t0
        after = mem_available_mb()
        disk = [allocated_bytes(Path(settings.sandboxes_dir) / sid) for sid in random.sample(ids, min(50, len(ids)))]
        per_disk = sum(disk) / len(disk)
        free = shutil.disk_usage(settings.sandboxes_dir).free
        out["evicted"] = {"sandboxes_on_disk": len(ids), "wall_s": round(wall, 1), "create_ms": dist(creates),
                          "checkpoint_ms": dist(checkpoints), "image_mib_mean": round(sum(sizes) / len(sizes) / 2**20, 2),
                          "disk_mib_per_sandbox": round(per_disk / 2**20, 2),
                          "mem_available_mib_before": before, "mem_available_mib_after": after}
        restores = []
        for sid in random.sample(ids, min(20, len(ids))):
            t = time.perf_counter()
            await backend.resume(sid)
            await first_command(backend._paths(sid)[1])
            restores.append((time.perf_counter() - t) * 1000)
        out["restore_to_first_command_ms"] = dist(restores)
        total = mem_total_mb()
        fit_ram = total / per_ram if per_ram > 0 else None
        fit_disk = (free + per_disk * len(ids)) / per_disk
        out["capacity"] = {"mem_total_mib": total, "fit_in_ram": round(fit_ram) if fit_ram else None,
                           "disk_free_gib_after": round(free / 2**30, 1), "fit_on_disk": round(fit_disk),
                           "ratio": round(fit_disk / fit_ram, 1) if fit_ram else None}
    finally:
        for sid in ids:
            try:
                await backend.destroy(sid)
            except Exception as exc:  # noqa: BLE001 - a bench cleans up what it can
                print(f"destroy {sid}: {exc}")
        await backend.close()
        shutil.rmtree(data, ignore_errors=True)
    save("eviction", out)


if __name__ == "__main__":
    asyncio.run(main())
