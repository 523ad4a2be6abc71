"""E2B dialect, end to end through the official SDK: create -> first command, command round trip,
file write+read, run_code round trip, kill. Prints medians and p90s; asserts nothing.

    .venv/bin/python bench/e2b_sdk.py --api http://127.0.0.1:8080 --sandbox http://127.0.0.1:8081 --key KEY [--runs 10]

Needs a running `sandboxd serve` (any backend). Peer anchors (docs/clients/e2b.md §5): E2B claims ~150 ms
create; third-party time-to-interactive median for E2B is 0.44 s.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time


def ms(xs: list[float]) -> str:
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, int(len(xs) * 0.9))]
    return f"median {statistics.median(xs) * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms   (n={len(xs)})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", required=True)
    ap.add_argument("--sandbox", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--template", default="base")
    ap.add_argument("--code", action="store_true", help="also time run_code (code-interpreter template)")
    a = ap.parse_args()
    os.environ.update(E2B_API_URL=a.api, E2B_SANDBOX_URL=a.sandbox, E2B_API_KEY=a.key)
    from e2b import Sandbox

    create, first, cmd, files, kill = [], [], [], [], []
    for _ in range(a.runs):
        t0 = time.perf_counter()
        sbx = Sandbox.create(template=a.template, timeout=120)
        t1 = time.perf_counter()
        sbx.commands.run("true")
        t2 = time.perf_counter()
        create.append(t1 - t0)
        first.append(t2 - t0)
        for _ in range(5):
            t = time.perf_counter()
            sbx.commands.run("echo hi")
            cmd.append(time.perf_counter() - t)
            t = time.perf_counter()
            sbx.files.write("/tmp/bench.txt", "x" * 1024)
            sbx.files.read("/tmp/bench.txt")
            files.append(time.perf_counter() - t)
        t = time.perf_counter()
        sbx.kill()
        kill.append(time.perf_counter() - t)
    print(f"create (API 201)              {ms(create)}")
    print(f"create -> first command done  {ms(first)}")
    print(f"commands.run('echo hi')       {ms(cmd)}")
    print(f"files.write + files.read 1KiB {ms(files)}")
    print(f"kill                          {ms(kill)}")
    if a.code:
        code_interpreter(a)


def pool_hits(a) -> int | None:
    import httpx

    r = httpx.get(f"{a.api}/v1/pools/code-interpreter", headers={"X-API-Key": a.key})
    return r.json().get("hits") if r.status_code == 200 else None


def code_interpreter(a) -> None:
    """create -> first run_code result (a pool member's kernel is adopted; a cold sandbox starts one), then
    the round trip on a warm kernel."""
    from e2b_code_interpreter import Sandbox as CI

    hits0 = pool_hits(a)
    first, warm = [], []
    for i in range(a.runs):
        t0 = time.perf_counter()
        sbx = CI.create(timeout=120)
        try:
            sbx.run_code("1")
            first.append(time.perf_counter() - t0)
            for _ in range(5 if i else 0):
                t = time.perf_counter()
                sbx.run_code("x = 1 + 1\nx")
                warm.append(time.perf_counter() - t)
        finally:
            sbx.kill()
        time.sleep(1.5)  # lets a pool refill between creates; without a pool every create is cold
    hits = None if hits0 is None else pool_hits(a) - hits0
    print(f"create -> first run_code      {ms(first)}   (pool hits: {hits if hits is not None else 'no pool'})")
    print(f"run_code warm                 {ms(warm)}")

if __name__ == "__main__":
    main()
