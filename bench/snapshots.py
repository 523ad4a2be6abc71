"""Memory checkpoints (docs/snapshots.md): what writing a sandbox to disk and bringing it back costs, against
the freezer's pause and resume measured in the same run.

    .venv/bin/python bench/snapshots.py [--runs 10] [--mib 100,1024] [--template code-interpreter]

Rows (real sandboxes through the backend, as the control plane calls it):
  idle            a sandbox that only runs its agent: checkpoint time, image size and what is in it, restore
                  time, and restore -> first command answered by the agent (p50/p95; target p50 <= 150 ms)
  kernel N MiB    a Python kernel holding N MiB of data: checkpoint and restore time, image size, seconds per
                  GiB of image (target: checkpoint <= 1 s per GiB)
  floor           the freezer's pause and resume of the same idle sandbox (what pause cost before), and a cold
                  create -> first command
Needs root, crun, a built template and a usable CRIU (`sandboxd setup`). Asserts nothing; JSON goes to
bench/results/snapshots-<time>.json.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime import dist, save, snapshot_backend  # noqa: E402  (bench/runtime.py)

from sandboxd.runtime import agentclient  # noqa: E402
from sandboxd.runtime.base import Resources, SandboxSpec  # noqa: E402


async def first_command(sock: Path) -> None:
    r = await agentclient.call_json(sock, "POST", "/commands/run", {"command": "true"}, 30.0)
    assert r["exit_code"] == 0, r


def contents(images: Path) -> dict[str, int]:
    """Image bytes by kind: pages (memory), and the rest (file, mount, namespace and task records)."""
    kinds: Counter[str] = Counter()
    for f in images.iterdir():
        if f.suffix == ".img":
            kinds["memory pages" if f.name.startswith("pages-") else "other records"] += f.stat().st_size
    return dict(kinds)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--mib", default="100,1024")
    ap.add_argument("--template", default="code-interpreter")
    a = ap.parse_args()
    settings, backend, image = snapshot_backend("bench-snap-", a.template, "/tmp")
    out: dict = {"template": a.template, "runs": a.runs, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def spec(mem_mb: int = 2048) -> SandboxSpec:
        return SandboxSpec(id=f"bs-{uuid.uuid4().hex[:10]}", image=image,
                           resources=Resources(vcpu=1.0, memory_mb=mem_mb, disk_mb=1024, pids=256))

    try:
        t = time.perf_counter()
        rt = await backend.create(spec())
        await first_command(rt.agent_socket)
        out["floor_cold_create_first_command_ms"] = round((time.perf_counter() - t) * 1000, 1)
        pause, resume, ck, size, rs, first = [], [], [], [], [], []
        for _ in range(a.runs):
            t = time.perf_counter()
            await backend.pause(rt.id)
            pause.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            await backend.resume(rt.id)
            resume.append((time.perf_counter() - t) * 1000)
        for _ in range(a.runs):
            cp = await backend.checkpoint(rt.id)
            ck.append(cp.seconds * 1000)
            size.append(cp.size_bytes)
            t = time.perf_counter()
            await backend.resume(rt.id)
            rs.append((time.perf_counter() - t) * 1000)
            await first_command(rt.agent_socket)
            first.append((time.perf_counter() - t) * 1000)
        images = rt.bundle / "checkpoint"
        await backend.checkpoint(rt.id)
        out["idle"] = {"checkpoint_ms": dist(ck), "image_mib": round(sum(size) / len(size) / 2**20, 1),
                       "image_contents_bytes": contents(images), "restore_ms": dist(rs),
                       "restore_to_first_command_ms": dist(first)}
        await backend.resume(rt.id)
        out["floor_freezer"] = {"pause_ms": dist(pause), "resume_ms": dist(resume)}
        await backend.destroy(rt.id)
        for mib in [int(x) for x in a.mib.split(",") if x]:
            rt = await backend.create(spec(mem_mb=max(2048, mib * 2 + 512)))
            code = f"blob = bytearray(os.urandom(1 << 20) * {mib})" if mib else "blob = b''"
            r = await agentclient.call_json(rt.agent_socket, "POST", "/execute",
                                            {"code": "import os\n" + code, "language": "python"}, 300.0)
            assert r.get("success"), r
            cp = await backend.checkpoint(rt.id)
            seconds = await backend.resume(rt.id)
            r = await agentclient.call_json(rt.agent_socket, "POST", "/execute",
                                            {"code": "print(len(blob) >> 20)", "language": "python"}, 60.0)
            assert r["stdout"].strip() == str(mib), r
            gib = cp.size_bytes / 2**30
            out[f"kernel_{mib}mib"] = {"checkpoint_s": round(cp.seconds, 3), "image_mib": round(cp.size_bytes / 2**20, 1),
                                       "checkpoint_s_per_gib": round(cp.seconds / gib, 2) if gib else None,
                                       "restore_s": round(seconds or 0, 3),
                                       "restore_s_per_gib": round((seconds or 0) / gib, 2) if gib else None}
            await backend.destroy(rt.id)
    finally:
        await backend.close()
    save("snapshots", out)


if __name__ == "__main__":
    asyncio.run(main())
