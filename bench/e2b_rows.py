"""The E2B rows of bench/run.py, driven through the official `e2b` SDK against the running server:

- time to interactive, as the public cross-provider benchmark measures it: `Sandbox.create()` → the first
  `commands.run("node -v")` answered, one after another and N at once (node is in `code-interpreter`);
- fork of a sandbox that wrote 100 MiB: one copy, and ten in one call;
- snapshot of that sandbox, and create → first command from the snapshot beside a cold create.

Floors measured in the same run: Debian's podman running `node -v` in a fresh container on the same rootfs
(the TTI row), and `cp -a` of the 100 MiB the sandbox wrote, on the data directory's filesystem (fork and
snapshot copy that much at least, unless the filesystem shares extents).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TTI_TEMPLATE = "code-interpreter"
WRITTEN_MIB = 100


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


class E2BRows:
    def __init__(self, srv, data_dir: Path, runs: int, at_once: int):
        self.srv, self.data, self.runs, self.at_once = srv, data_dir, runs, at_once
        os.environ.update(E2B_API_KEY=srv.key, E2B_API_URL=srv.base, E2B_SANDBOX_URL=srv.gateway)

    def _tti(self) -> float:
        from e2b import Sandbox

        t = time.perf_counter()
        sb = Sandbox.create(template=TTI_TEMPLATE, timeout=300)
        try:
            r = sb.commands.run("node -v")
            assert r.exit_code == 0 and r.stdout.startswith("v"), r
            return _ms(t)
        finally:
            sb.kill()

    def tti(self) -> dict[str, list[float]]:
        sequential = [self._tti() for _ in range(self.runs)]
        with ThreadPoolExecutor(self.at_once) as ex:
            at_once = list(ex.map(lambda _i: self._tti(), range(self.at_once)))
        return {"sequential": sequential, "at_once": at_once}

    def fork_and_snapshot(self) -> dict[str, list[float]]:
        from e2b import Sandbox

        out: dict[str, list[float]] = {k: [] for k in ("fork_one", "fork_ten", "snapshot", "from_snapshot", "cold",
                                                       "cp_floor")}
        sb = Sandbox.create(template="base", timeout=600)
        try:
            sb.commands.run(f"dd if=/dev/urandom of=/home/user/blob bs=1M count={WRITTEN_MIB} status=none")
            for count, key, times in ((1, "fork_one", self.runs), (10, "fork_ten", max(1, self.runs // 5))):
                for _ in range(times):
                    t = time.perf_counter()
                    copies = sb.fork(count=count, timeout=300)
                    out[key].append(_ms(t))
                    assert not [c for c in copies if isinstance(c, Exception)], copies
                    _kill_all(copies)  # each copy holds its own 100 MiB: gone before the next
            for _ in range(self.runs):
                t = time.perf_counter()
                snap = sb.create_snapshot().snapshot_id
                out["snapshot"].append(_ms(t))
                t = time.perf_counter()
                child = Sandbox.create(template=snap, timeout=300)
                child.commands.run("true")
                out["from_snapshot"].append(_ms(t))
                child.kill()
                Sandbox.delete_snapshot(snap)
                t = time.perf_counter()
                cold = Sandbox.create(template="base", timeout=300)
                cold.commands.run("true")
                out["cold"].append(_ms(t))
                cold.kill()
            out["cp_floor"] = _cp_floor(self.data, self.runs)
        finally:
            sb.kill()
        return out


def _kill_all(sandboxes: list) -> None:
    for s in sandboxes:
        if not isinstance(s, Exception):
            try:
                s.kill()
            except Exception:  # already gone: nothing to measure there
                pass


def _cp_floor(data_dir: Path, runs: int) -> list[float]:
    work = Path(tempfile.mkdtemp(prefix="perf-cp-", dir=data_dir))
    try:
        (work / "src").mkdir()
        with open(work / "src" / "blob", "wb") as f:
            for _ in range(WRITTEN_MIB):
                f.write(os.urandom(1 << 20))
        out = []
        for i in range(runs):
            t = time.perf_counter()
            subprocess.run(["cp", "-a", str(work / "src"), str(work / f"copy{i}")], check=True)
            out.append(_ms(t))
            shutil.rmtree(work / f"copy{i}")
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)
