"""The SDK calls the CLI's pools, webhooks, template logs, stop/start and followed events stand on, against
httpx.MockTransport: the request each sends and what it makes of the answer."""
from __future__ import annotations

import json

import httpx

from sandboxd.sdk import Client
from sandboxd.sdk._agent import command_body, stream_frame, terminal_path

SANDBOX = {"id": "sb1", "object": "sandbox", "status": "stopped", "template_name": "base"}


def recording(answers: dict[tuple[str, str], httpx.Response]):
    sent: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        sent.append(req)
        return answers[(req.method, req.url.path)]

    return Client("k_test", "http://cp.test", transport=httpx.MockTransport(handler)), sent


def test_stop_start_pools_and_build_logs():
    c, sent = recording({
        ("POST", "/v1/sandboxes/sb1/stop"): httpx.Response(200, json=SANDBOX),
        ("POST", "/v1/sandboxes/sb1/start"): httpx.Response(200, json={**SANDBOX, "status": "running"}),
        ("GET", "/v1/pools"): httpx.Response(200, json={"object": "list", "data": [{"template_name": "base"}]}),
        ("PUT", "/v1/pools/code-interpreter"): httpx.Response(200, json={"template_name": "code-interpreter",
                                                                         "target": 2}),
        ("GET", "/v1/templates/build/tpl_x/logs"): httpx.Response(200, json={"logs": "a\n", "offset": 2,
                                                                            "status": "ready", "complete": True}),
    })
    assert c.stop_sandbox("sb1").status == "stopped" and c.start_sandbox("sb1").status == "running"
    assert c.list_pools() == [{"template_name": "base"}]
    assert c.set_pool("code-interpreter", 2)["target"] == 2
    assert json.loads(sent[-1].content) == {"size": 2}
    assert c.build_logs("tpl_x", 5)["offset"] == 2 and sent[-1].url.params["offset"] == "5"


def test_webhook_calls_send_e2b_bodies():
    hook = {"id": "wh1", "name": "n", "url": "http://h/x", "enabled": False, "events": ["sandbox.lifecycle.killed"]}
    c, sent = recording({
        ("POST", "/events/webhooks"): httpx.Response(201, json=hook),
        ("GET", "/events/webhooks"): httpx.Response(200, json=[hook]),
        ("PATCH", "/events/webhooks/wh1"): httpx.Response(200, json=hook),
        ("DELETE", "/events/webhooks/wh1"): httpx.Response(200, json={}),
        ("GET", "/events/webhooks/wh1/deliveries"): httpx.Response(200, json=[{"eventId": "e1"}]),
    })
    c.create_webhook("n", "http://h/x", ["sandbox.lifecycle.killed"], "secret", enabled=False)
    assert json.loads(sent[-1].content) == {"name": "n", "url": "http://h/x", "enabled": False,
                                            "events": ["sandbox.lifecycle.killed"], "signatureSecret": "secret"}
    assert c.list_webhooks() == [hook]
    assert c.update_webhook("wh1", enabled=False)["enabled"] is False
    assert json.loads(sent[-1].content) == {"enabled": False}
    assert c.webhook_deliveries("wh1", limit=5, status="failed") == [{"eventId": "e1"}]
    assert dict(sent[-1].url.params) == {"limit": "5", "deliveryStatus": "failed"}
    c.delete_webhook("wh1")
    assert sent[-1].method == "DELETE"


def test_event_stream_yields_lifecycle_events_after_the_connect():
    body = (": connected\n\n: heartbeat\n\n"
            'id: 7\nevent: message\ndata: {"id": 7, "type": "sandbox.lifecycle.paused", "sandbox_id": "sb1", '
            '"timestamp": "2026-01-02T03:04:05Z", "data": {"status": "paused"}}\n\n'
            'event: end\ndata: {}\n\n')
    c, sent = recording({("GET", "/v1/sandboxes/stream"): httpx.Response(200, text="retry: 3000\n" + body)})
    with c.event_stream() as events:
        got = list(events)
    assert [(e.type, e.sandbox_id, e.data) for e in got] == [("sandbox.lifecycle.paused", "sb1", {"status": "paused"})]
    assert got[0].timestamp is not None and got[0].timestamp.second == 5


def test_commands_and_terminal_carry_the_user():
    body = command_body("id -un", 30, {"A": "1"}, None, "user")
    assert stream_frame("id -un", body) == {"type": "execute", "code": "id -un", "language": "bash", "timeout": 30,
                                            "env": {"A": "1"}, "user": "user"}  # no workdir: the template's
    assert stream_frame("pwd", command_body("pwd", 30, None, "/tmp"))["workdir"] == "/tmp"
    assert "user" not in stream_frame("true", command_body("true", 30, None, None))
    assert terminal_path(None) == "/terminal" and terminal_path("a b") == "/terminal?user=a+b"
