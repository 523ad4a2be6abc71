"""SSE: ids, Last-Event-ID resume, heartbeats, the seed's two clients, a clean end when the sandbox dies."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import requests


def read_frames(resp, stop_after: int, timeout: float = 30.0) -> tuple[list[dict], list[str]]:
    """Parse SSE frames (id/event/data) and comment lines from a streaming response."""
    frames, comments, cur = [], [], {}
    deadline = time.monotonic() + timeout
    for line in resp.iter_lines():
        if isinstance(line, bytes):
            line = line.decode()
        if time.monotonic() > deadline:
            break
        if line.startswith(":"):
            comments.append(line)
        elif line == "":
            if "data" in cur:  # as EventSource: a block without data dispatches nothing
                frames.append(cur)
                if len(frames) >= stop_after:
                    break
            cur = {}
        else:
            k, _, v = line.partition(":")
            cur[k] = v[1:] if v.startswith(" ") else v
    return frames, comments


def test_sandbox_stream_resumes_with_last_event_id(cp, client):
    first = client.post("/v1/sandboxes", json={"template_name": "base"}).json()
    with httpx.Client(base_url=cp.base, timeout=30) as c:
        with c.stream("GET", "/v1/sandboxes/stream", params={"token": cp.key}) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
            assert resp.headers["x-request-id"] and resp.headers["x-ratelimit-limit"]
            client.post(f"/v1/sandboxes/{first['id']}/pause")
            frames, _ = read_frames(resp, 1)
        paused = json.loads(frames[0]["data"])
        assert paused["type"] == "sandbox.lifecycle.paused" and paused["sandbox_id"] == first["id"]
        assert paused["status"] == "paused" and paused["data"]["execution"]["vcpu_count"] >= 1
        last_id = int(frames[0]["id"])
        # Changes while the client is away...
        client.post(f"/v1/sandboxes/{first['id']}/resume")
        client.delete(f"/v1/sandboxes/{first['id']}")
        # ...are replayed on reconnect, in order, then the stream goes on live.
        with c.stream("GET", "/v1/sandboxes/stream", headers={"Authorization": f"Bearer {cp.key}",
                                                             "Last-Event-ID": str(last_id)}) as resp:
            frames, _ = read_frames(resp, 2)
    types = [json.loads(f["data"])["type"] for f in frames]
    assert types == ["sandbox.lifecycle.resumed", "sandbox.lifecycle.killed"]
    killed = json.loads(frames[1]["data"])
    assert killed["data"]["kill_reason"] == "user" and killed["data"]["execution"]["execution_time"] >= 0
    assert int(frames[0]["id"]) > last_id and int(frames[1]["id"]) > int(frames[0]["id"])


def test_idle_stream_sends_heartbeats(cp):
    with httpx.Client(base_url=cp.base, timeout=30) as c:
        with c.stream("GET", "/v1/templates/stream", headers={"X-API-Key": cp.key}) as resp:
            start = time.monotonic()
            comments = []
            for line in resp.iter_lines():
                if line.startswith(":"):
                    comments.append(line)
                if len(comments) >= 3:
                    break
            assert time.monotonic() - start < 10
    assert any("heartbeat" in c for c in comments)


def test_seed_python_client_reads_metrics_and_stream_ends_on_kill(cp, client):
    """The seed's `requests` example, only the base URL changed; plus the final event on kill."""
    sb = client.post("/v1/sandboxes", json={"template_name": "base"}).json()
    api_key, base_url = cp.key, cp.base
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "text/event-stream"}
    stream_url = f"{base_url}/v1/sandboxes/{sb['id']}/metrics/stream"
    printed, ids, events = [], [], []
    threading.Timer(3.5, lambda: client.delete(f"/v1/sandboxes/{sb['id']}")).start()
    with requests.get(stream_url, headers=headers, stream=True, timeout=30) as response:
        for line in response.iter_lines():
            if not line:
                continue
            line_str = line.decode("utf-8")
            if line_str.startswith("event: "):
                events.append(line_str[7:])
            elif line_str.startswith("data: "):
                data = json.loads(line_str[6:])
                uptime = data.get("uptime_seconds", 0)
                total_exec = data.get("total_executions", 0)
                active_exec = data.get("active_executions", 0)
                errors = data.get("error_count", 0)
                printed.append(f"Uptime: {uptime:6d}s | Executions: {total_exec:4d} | Active: {active_exec:2d} | "
                               f"Errors: {errors:3d}")
            elif line_str.startswith("id: "):
                ids.append(int(line_str[4:]))
    # The loop ended by itself: the server closed the stream after the final event.
    assert len(printed) >= 3 and events[-1] == "end" and "message" in events
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_seed_eventsource_style_client_with_token_query_and_resume(cp, client):
    sb = client.post("/v1/sandboxes", json={"template_name": "base"}).json()
    try:
        url = f"{cp.base}/v1/sandboxes/{sb['id']}/metrics/stream?token={cp.key}"
        with httpx.Client(timeout=30) as c:
            with c.stream("GET", url, headers={"Accept": "text/event-stream"}) as resp:
                frames, _ = read_frames(resp, 2)
            assert all(f["event"] == "message" for f in frames)
            last = int(frames[-1]["id"])
            time.sleep(2.5)  # away for a while: the feed keeps sampling
            with c.stream("GET", url, headers={"Last-Event-ID": str(last)}) as resp:
                missed, _ = read_frames(resp, 2)
        assert int(missed[0]["id"]) > last
        assert (int(missed[0]["id"]) - last) < 3000  # the next snapshot, not one from much later
        assert json.loads(missed[0]["data"])["sandbox_id"] == sb["id"]
    finally:
        client.delete(f"/v1/sandboxes/{sb['id']}")


def test_metrics_stream_of_unknown_sandbox_is_404(client):
    r = client.get("/v1/sandboxes/sbnope/metrics/stream")
    assert r.status_code == 404 and r.json()["code"] == "sandbox_not_found"


def _eventsource_dir() -> Path | None:
    import shutil
    import subprocess

    if not shutil.which("node") or not shutil.which("npm"):
        return None
    d = Path.home() / ".cache" / "sandboxd-tests" / "js"
    if not (d / "node_modules" / "eventsource").is_dir():
        d.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(["npm", "install", "--silent", "--prefix", str(d), "eventsource@2"], timeout=180,
                           check=True, capture_output=True)
        except (subprocess.SubprocessError, OSError):
            return None
    return d


def test_seed_javascript_eventsource_client(cp, client):
    import os
    import shutil
    import subprocess
    from pathlib import Path

    import pytest

    d = _eventsource_dir()
    if d is None:
        pytest.skip("node/npm or the eventsource package is not available")
    script = d / "seed_eventsource.mjs"
    shutil.copy(Path(__file__).parent / "seed_eventsource.mjs", script)
    sb = client.post("/v1/sandboxes", json={"template_name": "base"}).json()
    try:
        env = {**os.environ, "API_KEY": cp.key, "BASE_URL": cp.base, "SANDBOX_ID": sb["id"]}
        out = subprocess.run(["node", str(script)], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr + out.stdout
        assert out.stdout.count("Uptime: ") == 3 and "Error Count: 0" in out.stdout
        ids = [int(line[4:]) for line in out.stdout.splitlines() if line.startswith("ID: ")]
        assert ids == sorted(ids) and len(set(ids)) == 3
    finally:
        client.delete(f"/v1/sandboxes/{sb['id']}")
