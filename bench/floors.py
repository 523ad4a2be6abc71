"""The floors bench/run.py prints next to sandboxd's figures, measured in the same run on the same rootfs:
bare `crun` (no overlay, no user namespace, no agent), Debian's podman (`podman run --rootfs DIR:O` +
`podman exec`, what a user would otherwise reach for), and raw Jupyter `execute` over ZMQ.

Every container made here is named `perf-...` and removed before the function returns.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime import bare_bundle, pss_kib  # noqa: E402  (bench/runtime.py)

SLEEP = ["/usr/bin/tini", "--", "/usr/bin/sleep", "infinity"]


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


class BareCrun:
    def __init__(self, rootfs: Path):
        self.rootfs = rootfs
        self.work = Path(tempfile.mkdtemp(prefix="perf-bare-", dir="/tmp"))
        self.crun = ["crun", "--root", str(self.work / "state")]

    def _run(self, *a: str) -> None:
        subprocess.run([*self.crun, *a], check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)

    def start(self) -> str:
        cid = f"perf-bare-{uuid.uuid4().hex[:8]}"
        self._run("run", "-d", "--bundle", str(bare_bundle(self.rootfs, self.work, SLEEP)), cid)
        return cid

    def remove(self, cid: str) -> float:
        t = time.perf_counter()
        subprocess.run([*self.crun, "delete", "--force", cid], check=False, stdout=subprocess.DEVNULL)
        return _ms(t)

    def measure(self, runs: int, idle: int) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {k: [] for k in ("cold", "resume_exec", "exec", "pause", "resume", "delete")}
        try:
            for _ in range(runs):
                t = time.perf_counter()
                cid = self.start()
                self._run("exec", cid, "true")
                out["cold"].append(_ms(t))
                out["delete"].append(self.remove(cid))
            cid = self.start()
            for _ in range(runs):
                t = time.perf_counter()
                self._run("exec", cid, "true")
                out["exec"].append(_ms(t))
                t = time.perf_counter()
                self._run("pause", cid)
                out["pause"].append(_ms(t))
                t = time.perf_counter()
                self._run("resume", cid)
                out["resume"].append(_ms(t))
                self._run("pause", cid)
                t = time.perf_counter()
                self._run("resume", cid)
                self._run("exec", cid, "true")
                out["resume_exec"].append(_ms(t))
            self.remove(cid)
            cids = [self.start() for _ in range(idle)]
            time.sleep(1.0)
            out["idle_pss_kib"] = [float(pss_kib(_cgroup_pids(c) or [self._pid(c)])) for c in cids]
            for c in cids:
                self.remove(c)
        finally:
            self.close()
        return out

    def _pid(self, cid: str) -> int:
        return json.loads(subprocess.run([*self.crun, "state", cid], capture_output=True, check=True).stdout)["pid"]

    def close(self) -> None:
        listed = subprocess.run([*self.crun, "list", "-f", "json"], capture_output=True).stdout or b"[]"
        for c in json.loads(listed) or []:
            subprocess.run([*self.crun, "delete", "--force", c["id"]], check=False)
        shutil.rmtree(self.work, ignore_errors=True)


def _cgroup_pids(cid: str) -> list[int]:
    p = Path(f"/sys/fs/cgroup/pids/{cid}/cgroup.procs")
    return [int(x) for x in p.read_text().split()] if p.exists() else []


def podman(rootfs: Path, runs: int, first: tuple[str, ...] = ("true",)) -> dict[str, list[float]] | None:
    """podman run --rootfs DIR:O + exec `first`; None when podman is missing or cannot run here."""
    if not shutil.which("podman"):
        return None
    conf = Path(tempfile.mkdtemp(prefix="perf-podman-")) / "containers.conf"
    # Raising RLIMIT_NOFILE is not permitted on these hosts; podman's default would (docs/performance.md).
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n')
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def pm(*a: str) -> subprocess.CompletedProcess:
        return subprocess.run(["podman", *a], env=env, capture_output=True, stdin=subprocess.DEVNULL)

    out: dict[str, list[float]] = {k: [] for k in ("cold", "exec", "pause", "resume", "delete")}
    names = []
    try:
        for _ in range(runs):
            name = f"perf-pm-{uuid.uuid4().hex[:8]}"
            names.append(name)
            t = time.perf_counter()
            r = pm("run", "-d", "--name", name, "--network", "none", "--rootfs", f"{rootfs}:O", *SLEEP[2:])
            if r.returncode != 0:
                print(f"podman unavailable: {r.stderr.decode()[-300:]}", file=sys.stderr)
                return None
            pm("exec", name, *first)
            out["cold"].append(_ms(t))
            t = time.perf_counter()
            pm("exec", name, "true")
            out["exec"].append(_ms(t))
            t = time.perf_counter()
            pm("pause", name)
            out["pause"].append(_ms(t))
            t = time.perf_counter()
            pm("unpause", name)
            out["resume"].append(_ms(t))
            t = time.perf_counter()
            pm("rm", "-f", "-t", "0", name)
            out["delete"].append(_ms(t))
            names.remove(name)
        return out
    finally:
        for name in names:
            pm("rm", "-f", "-t", "0", name)
        shutil.rmtree(conf.parent, ignore_errors=True)


def jupyter_zmq(runs: int) -> list[float] | None:
    """`x = x + 1` through jupyter_client straight to an ipykernel over ZMQ: execute_request until the
    reply and the idle status, the same completion the agent waits for."""
    try:
        from jupyter_client.manager import start_new_kernel
    except ImportError:
        return None
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        kc.execute_interactive("x = 0", timeout=30)
        out = []
        for _ in range(runs):
            t = time.perf_counter()
            kc.execute_interactive("x = x + 1", timeout=30, output_hook=lambda _m: None)
            out.append(_ms(t))
        return out
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
