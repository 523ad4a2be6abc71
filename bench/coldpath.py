"""Host side of a cold sandbox start, before/after each change of the lean hot path (docs/performance.md).

    .venv/bin/python bench/coldpath.py [--runs 40] [--e2e 30] [--disk-mb 2048] [--template base]

Rows (p50 / p95 / p99 ms, before → after, measured interleaved in the same run so load drift hits both):
  disk image      truncate + mkfs.ext4                 → sparse copy of the cached blank image
  loop mount      `mount -o loop` subprocess           → LOOP_CTL_GET_FREE + LOOP_CONFIGURE + mount(2)
  root prepare    SandboxRoot.create (disk+loop+overlay), old path → new path
  crun state/run/delete   crun from /usr/bin           → crun from the daemon's sealed memfd
  crun run, seccomp   the sandbox profile compiled by crun → the program it compiled before, by annotation
                      (wall, and the host's busy CPU over the call)
  backend.create  a whole cold create (agent healthy), all three off → all three on (--e2e N, 0 skips)
Needs root, crun and a built template. Asserts nothing; JSON goes to bench/results/coldpath-<time>.json.
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
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime import bare_bundle, dist, host_cpu_ms  # noqa: E402  (bench/runtime.py)

from sandboxd.config import Settings  # noqa: E402
from sandboxd.runtime import diskimage, get_backend, loopdev, rootfs, seccomp  # noqa: E402
from sandboxd.runtime.base import Resources, SandboxSpec  # noqa: E402
from sandboxd.runtime.oci.bpfcache import BpfCache  # noqa: E402
from sandboxd.runtime.oci.cli import OciCli  # noqa: E402
from sandboxd.templates.store import TemplateStore  # noqa: E402

UID = 100000
SLEEP = ["/usr/bin/tini", "--", "/usr/bin/sleep", "infinity"]


def ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


@contextmanager
def old_path():
    """The code path before this change: mkfs per sandbox and the `mount` binary (crun is switched by the
    caller). Patches module attributes for the duration only."""
    orig_create, orig_mount = rootfs.SandboxRoot.create, loopdev.mount_image

    def create(self, disk_mb, cache_dir=None):
        return orig_create(self, disk_mb, None)

    def no_ioctl(*a, **kw):
        raise loopdev.LoopUnavailable("bench: old path")

    rootfs.SandboxRoot.create, loopdev.mount_image = create, no_ioctl
    try:
        yield
    finally:
        rootfs.SandboxRoot.create, loopdev.mount_image = orig_create, orig_mount


def bench_disk(work: Path, runs: int, disk_mb: int) -> dict:
    out = {"mkfs": [], "copy": []}
    blank = diskimage.blank(work / "cache", disk_mb, UID)
    for i in range(runs):
        t = time.perf_counter()
        diskimage.mkfs(work / f"mkfs{i}.img", disk_mb, UID)
        out["mkfs"].append(ms(t))
        t = time.perf_counter()
        diskimage.sparse_copy(blank, work / f"copy{i}.img")
        out["copy"].append(ms(t))
    for p in work.glob("mkfs*.img"):
        p.unlink()
    return out


def bench_loop(work: Path, runs: int) -> dict:
    out = {"mount_binary": [], "ioctl": [], "umount": []}
    for i in range(runs):
        for kind in ("mount_binary", "ioctl"):
            mnt = work / f"m-{kind}-{i}"
            mnt.mkdir()
            img = work / f"copy{i}.img"
            t = time.perf_counter()
            if kind == "ioctl":
                loopdev.mount_image(img, mnt, "ext4", rootfs.MS_NOSUID | rootfs.MS_NODEV)
            else:
                subprocess.run(["mount", "-o", "loop,nosuid,nodev", str(img), str(mnt)], check=True)
            out[kind].append(ms(t))
            t = time.perf_counter()
            rootfs._umount(mnt)
            out["umount"].append(ms(t))
    return out


def bench_prepare(work: Path, layers, runs: int, disk_mb: int) -> dict:
    out = {"old": [], "new": []}
    for i in range(runs):
        for kind in ("old", "new"):
            d = work / f"sb-{kind}-{i}"
            d.mkdir()
            root = rootfs.SandboxRoot(d, layers, rootfs.Ids(store_base=UID, host_base=UID, count=65536))
            t = time.perf_counter()
            if kind == "old":
                with old_path():
                    root.create(disk_mb)
            else:
                root.create(disk_mb, cache_dir=work / "cache")
            out[kind].append(ms(t))
            root.unmount()
            shutil.rmtree(d)
    return out


async def bench_crun(work: Path, rootfs_dir: Path, runs: int) -> dict:
    root = work / "state"
    clis = {"plain": OciCli("crun", root, sealed=False), "sealed": OciCli("crun", root)}
    out = {f"{verb}_{k}": [] for verb in ("run", "state", "delete") for k in clis}
    bundle = bare_bundle(rootfs_dir, work / "bundles", SLEEP)
    log = open(work / "crun.log", "ab")  # the container keeps its stdio: a pipe would never see EOF
    for _ in range(runs):
        for k, cli in clis.items():
            cid = f"coldpath-{uuid.uuid4().hex[:8]}"
            t = time.perf_counter()
            await cli.call("run", "-d", "--bundle", str(bundle), cid, stdout=log, stderr=log)
            out[f"run_{k}"].append(ms(t))
            t = time.perf_counter()
            await cli.call("state", cid)
            out[f"state_{k}"].append(ms(t))
            t = time.perf_counter()
            await cli.call("delete", "--force", cid)
            out[f"delete_{k}"].append(ms(t))
    out.update(await bench_seccomp(work, rootfs_dir, runs, log_path=work / "crun.log"))
    log.close()
    return out



async def bench_seccomp(work: Path, rootfs_dir: Path, runs: int, log_path: Path) -> dict:
    """`crun run -d` with the sandboxes' seccomp profile: compiled by crun (libseccomp) every time → crun's
    own program from the first run handed back through run.oci.seccomp_bpf_data (oci/bpfcache.py)."""
    cli = OciCli("crun", work / "state")
    cache = BpfCache("crun")
    bundles = {}
    for k in ("compiled", "cached"):
        bundle = bare_bundle(rootfs_dir, work / "bundles", SLEEP)
        cfg = json.loads((bundle / "config.json").read_text())
        cfg["linux"]["seccomp"] = seccomp.profile()
        bundles[k] = (bundle, cfg)
    out = {k: [] for k in ("seccomp_run_compiled", "seccomp_run_cached", "seccomp_cpu_compiled", "seccomp_cpu_cached")}
    log = open(log_path, "ab")
    for i in range(runs + 1):
        for k, (bundle, cfg) in bundles.items():
            if k == "cached":
                cache.annotate(cfg)
            (bundle / "config.json").write_text(json.dumps(cfg))
            cid = f"coldpath-{uuid.uuid4().hex[:8]}"
            t, c = time.perf_counter(), host_cpu_ms()
            await cli.call("run", "-d", "--bundle", str(bundle), cid, stdout=log, stderr=log)
            wall, cpu = ms(t), host_cpu_ms() - c
            cache.learn(BpfCache.key(cfg["linux"]["seccomp"]), cli.root / cid)
            await cli.call("delete", "--force", cid)
            if i:  # the first round teaches the cache
                out[f"seccomp_run_{k}"].append(wall)
                out[f"seccomp_cpu_{k}"].append(cpu)
    log.close()
    return out


async def bench_e2e(image, runs: int, disk_mb: int) -> dict:
    data = Path(tempfile.mkdtemp(prefix="coldpath-e2e-", dir="/tmp"))
    settings = Settings(data_dir=data, backend="crun", templates_path=Path(os.environ.get(
        "SANDBOXD_TEMPLATES_PATH") or "/var/lib/sandboxd/templates"))
    backend = get_backend(settings)
    clis = {"new": backend.cli, "old": OciCli(backend.cli.binary, backend.cli.root, sealed=False)}
    out = {"create_old": [], "create_new": [], "destroy_old": [], "destroy_new": []}
    res = Resources(vcpu=1, memory_mb=512, disk_mb=disk_mb, pids=256)
    try:
        for i in range(runs + 1):  # the first pair warms the blank-image cache and page cache: dropped
            for kind in ("old", "new"):
                backend.cli = clis[kind]
                spec = SandboxSpec(id=f"coldpath-{kind}-{uuid.uuid4().hex[:8]}", image=image, resources=res)
                t = time.perf_counter()
                if kind == "old":
                    with old_path():
                        await backend.create(spec)
                else:
                    await backend.create(spec)
                created = ms(t)
                t = time.perf_counter()
                await backend.destroy(spec.id)
                if i:
                    out[f"create_{kind}"].append(created)
                    out[f"destroy_{kind}"].append(ms(t))
    finally:
        backend.cli = clis["new"]
        for d in Path(settings.sandboxes_dir).glob("*") if Path(settings.sandboxes_dir).is_dir() else []:
            try:
                await backend.destroy(d.name)
            except Exception:  # noqa: BLE001 - best-effort cleanup
                pass
        close = getattr(backend, "close", None)
        if close is not None:
            await close()
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(backend.cli.root.parent, ignore_errors=True)
    return out


ROWS = [  # figure, before key, after key
    ("disk image (mkfs → sparse copy)", ("disk", "mkfs"), ("disk", "copy")),
    ("loop mount (mount -o loop → ioctl)", ("loop", "mount_binary"), ("loop", "ioctl")),
    ("root prepare (disk+loop+overlay)", ("prepare", "old"), ("prepare", "new")),
    ("crun run -d (disk → sealed memfd)", ("crun", "run_plain"), ("crun", "run_sealed")),
    ("crun run -d, sandbox seccomp: compiled → cached", ("crun", "seccomp_run_compiled"), ("crun", "seccomp_run_cached")),
    ("  host CPU busy during that run (10 ms ticks)", ("crun", "seccomp_cpu_compiled"), ("crun", "seccomp_cpu_cached")),
    ("crun state", ("crun", "state_plain"), ("crun", "state_sealed")),
    ("crun delete --force", ("crun", "delete_plain"), ("crun", "delete_sealed")),
    ("backend.create, agent healthy", ("e2e", "create_old"), ("e2e", "create_new")),
    ("backend.destroy", ("e2e", "destroy_old"), ("e2e", "destroy_new")),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--e2e", type=int, default=30)
    ap.add_argument("--disk-mb", type=int, default=2048)
    ap.add_argument("--template", default="base")
    a = ap.parse_args()
    settings = Settings(templates_path=Path(os.environ.get("SANDBOXD_TEMPLATES_PATH") or "/var/lib/sandboxd/templates"))
    image = TemplateStore(settings).get(a.template)
    work = Path(tempfile.mkdtemp(prefix="coldpath-", dir="/tmp"))
    raw: dict[str, dict] = {}
    try:
        raw["disk"] = bench_disk(work, a.runs, a.disk_mb)
        raw["loop"] = bench_loop(work, a.runs)
        raw["prepare"] = bench_prepare(work, image.layers, a.runs, a.disk_mb)
        raw["crun"] = asyncio.run(bench_crun(work, image.layers[-1], a.runs))
        if a.e2e:
            raw["e2e"] = asyncio.run(bench_e2e(image, a.e2e, a.disk_mb))
    finally:
        for m in Path("/proc/self/mounts").read_text().splitlines():
            if str(work) in m.split()[1]:
                rootfs._umount(Path(m.split()[1]))
        left = subprocess.run(["crun", "--root", str(work / "state"), "list", "-q"], capture_output=True, text=True)
        for cid in left.stdout.split():
            subprocess.run(["crun", "--root", str(work / "state"), "delete", "--force", cid], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    print(f"{'figure':38} {'before p50/p95/p99':>22} {'after p50/p95/p99':>22} {'p50 saved':>10}")
    for name, (s1, k1), (s2, k2) in ROWS:
        if s1 not in raw:
            continue
        b, f = dist(raw[s1][k1]), dist(raw[s2][k2])
        rows.append({"figure": name, "before": b, "after": f, "saved_p50_ms": b["p50"] - f["p50"]})
        fmt = lambda d: f"{d['p50']:.1f} / {d['p95']:.1f} / {d['p99']:.1f}"  # noqa: E731
        print(f"{name:38} {fmt(b):>22} {fmt(f):>22} {b['p50'] - f['p50']:>9.1f}")
    print(f"(umount(2) of a loop disk, both paths: p50 {dist(raw['loop']['umount'])['p50']:.1f} ms; "
          f"disk {a.disk_mb} MiB, {a.runs} runs, e2e {a.e2e} runs, load {os.getloadavg()[0]:.1f})")
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    path = results / f"coldpath-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"args": vars(a), "loadavg": os.getloadavg(), "rows": rows, "raw": raw}, indent=1))
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
