"""Fork and snapshot of a running kernel (docs/snapshots.md, "Snapshots and forks with memory"), through
`sandboxd serve` and E2B's SDK.

    .venv/bin/python bench/fork.py [--count 10] [--mib 100] [--runs 3]

A parent sandbox (template code-interpreter) whose Python kernel holds --mib MiB is forked into --count
children with E2B's `fork(count=)`: the time of the whole call (the parent's copy and dump, then every child
restored and answering), per child; then each child's kernel is asked for the parent's variable (it must be
there: the run fails otherwise). The floor is a plain create of --count sandboxes from the same template in the
same run (`Sandbox.create` in parallel threads), whose kernels start empty. Asserts only that the children have
the variable. Then a snapshot of the parent (`create_snapshot()`, with memory) is taken and --count sandboxes are
made from it in parallel, each answering the variable: the time to take it, and of the creates. JSON goes to
bench/results/fork-<time>.json.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from runtime import save  # noqa: E402  (bench/runtime.py)
from support.server import CPServer  # noqa: E402  (the test suites' `sandboxd serve` harness)

TEMPLATES = os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--mib", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="bench-fork-", dir="/var/tmp"))
    data.chmod(0o755)
    srv = CPServer(data, None, SANDBOXD_BACKEND="crun", SANDBOXD_TEMPLATES_PATH=TEMPLATES).start()
    out: dict = {"count": a.count, "mib": a.mib, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": []}
    try:
        with srv.e2b_env():
            from e2b_code_interpreter import Sandbox

            for _ in range(a.runs):
                parent = Sandbox.create(timeout=600)
                ex = parent.run_code(f"import os\nblob = bytearray(os.urandom(1 << 20) * {a.mib})\nmark = 'from the parent'")
                assert ex.error is None, ex.error
                t = time.perf_counter()
                kids = parent.fork(count=a.count, timeout=300)
                fork_s = time.perf_counter() - t
                ok = [k for k in kids if isinstance(k, Sandbox)]
                assert len(ok) == a.count, kids
                got = [k.run_code("mark").text for k in ok]
                assert got == ["from the parent"] * a.count, got
                t = time.perf_counter()
                with ThreadPoolExecutor(a.count) as pool:
                    fresh = list(pool.map(lambda _: Sandbox.create(timeout=300), range(a.count)))
                create_s = time.perf_counter() - t
                t = time.perf_counter()
                snap = parent.create_snapshot()
                snapshot_s = time.perf_counter() - t
                t = time.perf_counter()
                with ThreadPoolExecutor(a.count) as pool:
                    made = list(pool.map(lambda sid: Sandbox.create(sid, timeout=300), [snap.snapshot_id] * a.count))
                from_snapshot_s = time.perf_counter() - t
                got = [m.run_code("mark").text for m in made]
                assert got == ["from the parent"] * a.count, got
                out["runs"].append({"fork_s": round(fork_s, 2), "fork_per_child_s": round(fork_s / a.count, 3),
                                    "floor_create_s": round(create_s, 2), "snapshot_s": round(snapshot_s, 2),
                                    "from_snapshot_s": round(from_snapshot_s, 2)})
                for s in [parent, *ok, *fresh, *made]:
                    s.kill()
                Sandbox.delete_snapshot(snap.snapshot_id)
    finally:
        srv.close()
        shutil.rmtree(data, ignore_errors=True)
    save("fork", out)


if __name__ == "__main__":
    main()
