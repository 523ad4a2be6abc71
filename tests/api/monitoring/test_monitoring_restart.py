"""Durability: SIGKILL a control-plane process while webhooks are being delivered, start it again, and
count every event delivered (at-least-once, in order per webhook)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from support.receiver import Receiver
from sandboxd.core import events as ev

KEY = "restart-test-key-000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir, port: int) -> subprocess.Popen:
    env = {**os.environ, "SANDBOXD_DATA_DIR": str(data_dir), "SANDBOXD_BACKEND": "fake", "SANDBOXD_API_KEY": KEY,
           "SANDBOXD_WEBHOOK_ALLOW_PRIVATE": "true", "SANDBOXD_WEBHOOK_BACKOFF_SECONDS": "0.1",
           "SANDBOXD_SAMPLE_INTERVAL_SECONDS": "1"}
    code = ("import uvicorn; from sandboxd.api.app import create_app; app = create_app();"
            "app.state.services.keys.bootstrap('%s');"
            "uvicorn.run(app, host='127.0.0.1', port=%d, log_level='warning')" % (KEY, port))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    end = time.time() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/events/webhooks", headers={"X-API-Key": KEY}, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.time() < end, "server did not start"
        time.sleep(0.1)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


@pytest.mark.slow
def test_every_event_is_delivered_across_a_sigkill(tmp_path):
    receiver = Receiver()
    receiver.delay = 0.15  # slow enough that deliveries are still queued when the server dies
    port = free_port()
    proc = start_server(tmp_path, port)
    try:
        c = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": KEY}, timeout=30)
        hook = c.post("/events/webhooks", json={"name": "restart", "url": receiver.url, "events": list(ev.LIFECYCLE_TYPES),
                                                "signatureSecret": "x"}).json()
        sandboxes = []
        for _ in range(5):
            r = c.post("/v1/sandboxes", json={"template_name": "base"})
            assert r.status_code == 201, r.text
            sid = r.json()["id"]
            sandboxes.append(sid)
            assert c.post(f"/v1/sandboxes/{sid}/pause").status_code == 200
            assert c.post(f"/v1/sandboxes/{sid}/resume").status_code == 200
            assert c.delete(f"/v1/sandboxes/{sid}").status_code in (200, 204)
        expected = []
        for sid in sandboxes:
            expected += [e["id"] for e in c.get(f"/events/sandboxes/{sid}", params={"orderAsc": "true"}).json()]
        assert len(expected) == 20
        end = time.time() + 30
        while len(receiver.payloads()) < 4:
            assert time.time() < end
            time.sleep(0.02)
        kill_group(proc)  # mid-delivery: most events are still in the outbox
        delivered_before = len({p["id"] for p in receiver.payloads()})
        assert delivered_before < 20
        proc = start_server(tmp_path, port)
        end = time.time() + 60
        while {p["id"] for p in receiver.payloads()} != set(expected):
            assert time.time() < end, f"{len({p['id'] for p in receiver.payloads()})}/20 delivered"
            time.sleep(0.1)
        seen: list[str] = []
        for p in receiver.payloads():  # first arrivals follow event order (redeliveries may repeat one)
            if p["id"] not in seen:
                seen.append(p["id"])
        team_order = [e["id"] for e in c.get("/events/sandboxes", params={"orderAsc": "true", "limit": 100}).json()]
        assert seen == [e for e in team_order if e in set(expected)]
        log = c.get(f"/events/webhooks/{hook['id']}/deliveries").json()
        assert len(log) == 20 and {x["deliveryStatus"] for x in log} == {"delivered"}
    finally:
        kill_group(proc)
        receiver.close()
