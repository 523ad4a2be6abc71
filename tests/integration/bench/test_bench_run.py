"""The benchmark's one entry point runs from a checkout and fills every row (a smoke run: tiny counts, no podman).
The figures themselves are the benchmark's business, not a test's."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.real
def test_bench_run_prints_and_writes_every_row():
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    r = subprocess.run([sys.executable, "bench/run.py", "--runs", "3", "--idle", "3", "--sustain", "2", "--pool", "2",
                        "--at-once", "2", "--no-podman"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    written = re.search(r"wrote (\S+\.json)", r.stdout)
    assert written, r.stdout[-2000:]
    path = Path(written.group(1))
    try:
        rows = json.loads(path.read_text())["rows"]
    finally:
        path.unlink()
    timed = [row for row in rows if "sandboxd_ms" in row]
    assert len(timed) == 15 and all(row["sandboxd_ms"] and row["sandboxd_ms"]["p50"] > 0 for row in timed), timed
    assert all(row["floor_ms"] and row["floor_ms"]["p50"] > 0 for row in timed if row["floor"] != "-")
    assert rows[0]["hits_counted"] == 3  # the pool-hit row really was served by the pool
    sustained = rows[-1]
    assert sustained["errors"] == 0 and sustained["measured"] > 0 and sustained["host_cpu_ms_per_create"] > 0
    for row in rows:
        assert row["figure"] in r.stdout
