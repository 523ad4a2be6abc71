"""The HopX SSE metrics stream carries the monitor's sample as the contract's `system` block (§5.6)."""
from __future__ import annotations

import time

from sandboxd.cli.monitoring import _line_of_system, _monitor_system, sse_frames


def _frames_with_monitor_system(server, sid: str, want: int) -> list[dict]:
    got: list[dict] = []
    end = time.time() + 30
    with server.client.stream("GET", f"/v1/sandboxes/{sid}/metrics/stream", params={"interval": 0.25},
                              timeout=30) as resp:
        assert resp.status_code == 200
        for event, data in sse_frames(resp.iter_lines()):
            assert time.time() < end, got
            if event == "message" and _monitor_system(data) is not None:
                got.append(data)
                if len(got) >= want:
                    return got
    raise AssertionError(f"stream ended after {got}")


def test_stream_frames_carry_the_monitors_system_block(server):
    sid = server.client.post("/v1/sandboxes", json={"template_name": "base"}).json()["id"]
    try:
        frames = _frames_with_monitor_system(server, sid, 3)
        for f in frames:
            sysb = f["system"]
            assert isinstance(sysb["cpu"]["usage_percent"], float) and 0.0 <= sysb["cpu"]["usage_percent"] <= 100.0
            assert isinstance(sysb["cpu"]["cores"], int) and sysb["cpu"]["cores"] >= 1
            for part in ("memory", "disk"):
                block = sysb[part]
                assert all(isinstance(block[k], int) for k in ("total", "used", "free"))
                assert block["free"] == max(block["total"] - block["used"], 0)
                assert isinstance(block["usage_percent"], float)
                if block["total"]:
                    assert abs(block["usage_percent"] - block["used"] / block["total"] * 100) < 0.01
            assert sysb["memory"]["total"] > 0 and sysb["memory"]["used"] > 0  # the fake backend has no disk quota
            assert isinstance(sysb["uptime"], (int, float))
            # the agent's own counters stay alongside, as ints (the seed's dashboard formats them with :6d)
            assert all(isinstance(f[k], int) for k in ("uptime_seconds", "total_requests", "error_count"))
        # the figures are the monitor's: the same memory limit and disk size as its latest sample
        latest = server.monitor.latest(sid)
        assert frames[-1]["system"]["memory"]["total"] == latest.mem_total
        assert frames[-1]["system"]["disk"]["total"] == latest.disk_total
        assert frames[-1]["system"]["sampled_at"] <= latest.ts
        line = _line_of_system(frames[-1]["system"])
        assert line.startswith("[") and " Cores | Memory: " in line and " MiB | Disk: " in line
    finally:
        server.client.delete(f"/v1/sandboxes/{sid}")
