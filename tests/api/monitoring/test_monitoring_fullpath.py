"""The whole path on the real control plane with the fake backend: a sandbox is created and killed through
the HopX API; its samples, events and signed webhooks come out the E2B side."""
from __future__ import annotations

import re


from sandboxd.core import events as ev
from support.waiting import wait_for

SECRET = "full-path-secret"




def test_create_sample_kill_events_and_signed_webhooks(server, receiver, seed_verify):
    c = server.client
    hook = c.post("/events/webhooks", json={"name": "full", "url": receiver.url, "events": [ev.CREATED, ev.KILLED],
                                            "signatureSecret": SECRET}).json()
    r = c.post("/v1/sandboxes", json={"template_name": "base", "metadata": {"owner": "mon"}})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    try:
        metrics = wait_for(lambda: c.get(f"/sandboxes/{sid}/metrics").json(), what="first sample")
        assert metrics[0]["memUsed"] > 0 and metrics[0]["cpuCount"] >= 1
        latest = server.monitor.latest(sid)
        assert latest is not None and latest.mem_used > 0
    finally:
        assert c.delete(f"/v1/sandboxes/{sid}").status_code in (200, 204)
    got = wait_for(lambda: [p for p in receiver.payloads() if p["sandboxId"] == sid] if len(
        [p for p in receiver.payloads() if p["sandboxId"] == sid]) >= 2 else None, what="two webhooks")
    assert [p["type"] for p in got] == [ev.CREATED, ev.KILLED]
    assert got[1]["eventData"]["kill_reason"] == "user"
    assert set(got[1]["eventData"]["execution"]) == {"started_at", "vcpu_count", "memory_mb", "execution_time"}
    assert got[0]["eventData"]["sandbox_metadata"] == {"owner": "mon"}
    for headers, body in receiver.requests:
        assert headers["e2b-webhook-id"] == hook["id"]
        assert seed_verify(SECRET, body, headers["e2b-signature"])
    events = c.get(f"/events/sandboxes/{sid}", params={"orderAsc": "true"}).json()
    assert [e["type"] for e in events] == [ev.CREATED, ev.KILLED]
    assert {e["id"] for e in events} == {p["id"] for p in got}  # same ids on both sides: receivers can dedup
    log = c.get(f"/events/webhooks/{hook['id']}/deliveries").json()
    assert [x["deliveryStatus"] for x in log] == ["delivered", "delivered"] and log[0]["responseStatusCode"] == 204
    text = c.get("/metrics").text
    created = re.search(r"^sandboxd_sandbox_creates_total (\S+)$", text, re.M)
    latency = re.search(r"^sandboxd_sandbox_create_seconds_count (\S+)$", text, re.M)
    assert created and float(created.group(1)) >= 1 and latency and float(latency.group(1)) >= 1
    c.delete(f"/events/webhooks/{hook['id']}")


def test_a_stuck_receiver_does_not_hold_up_the_api(server, receiver):
    c = server.client
    receiver.gate.clear()  # every delivery now hangs inside the receiver
    hook = c.post("/events/webhooks", json={"name": "stuck", "url": receiver.url, "events": list(ev.LIFECYCLE_TYPES),
                                            "signatureSecret": SECRET}).json()
    try:
        r = c.post("/v1/sandboxes", json={"template_name": "base"})
        assert r.status_code == 201
        sid = r.json()["id"]
        wait_for(lambda: server.monitor.dispatcher._workers, what="a delivery in flight")
        # With the delivery blocked, lifecycle calls and reads still complete (client timeout 30 s, receiver 60 s).
        assert c.post(f"/v1/sandboxes/{sid}/pause").status_code == 200
        assert c.post(f"/v1/sandboxes/{sid}/resume").status_code == 200
        assert c.delete(f"/v1/sandboxes/{sid}").status_code in (200, 204)
        assert len(c.get(f"/events/sandboxes/{sid}").json()) == 4
        assert receiver.payloads() == []
    finally:
        receiver.gate.set()
    wait_for(lambda: len([p for p in receiver.payloads() if p["sandboxId"] == sid]) == 4, what="deliveries after release")
    assert [p["type"] for p in receiver.payloads() if p["sandboxId"] == sid] == [ev.CREATED, ev.PAUSED, ev.RESUMED, ev.KILLED]
    c.delete(f"/events/webhooks/{hook['id']}")
