"""Request/response handling of the SDK against httpx.MockTransport: error mapping, retries, token
refresh, result parsing. (Features are tested against a real server in test_sandbox.py.)"""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import httpx
import pytest

import sandboxd
from sandboxd import sdk
from sandboxd.sdk import (AuthenticationError, Client, Execution, NetworkError, NotFoundError, PathNotFoundError,
                          PermissionDeniedError, RateLimitError, Sandbox, SandboxError, SandboxInfo, ServerError)
from sandboxd.sdk._http import Token

HYBRID_404 = {"error": {"message": "sandbox sbx not found", "code": "sandbox_not_found", "request_id": "req_1",
                        "details": {}}, "code": "sandbox_not_found", "message": "sandbox sbx not found",
              "request_id": "req_1"}


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def client_with(handler) -> Client:
    return Client("k_test", "http://cp.test", transport=httpx.MockTransport(handler))


def test_public_surface_is_all_and_lazy():
    assert sorted(sdk.__all__) == sorted(n for n in sandboxd.__all__ if n != "__version__")
    for name in sdk.__all__:
        assert getattr(sandboxd, name) is getattr(sdk, name)
    errors = [getattr(sdk, n) for n in sdk.__all__ if n.endswith("Error")]
    assert all(issubclass(e, SandboxError) for e in errors)
    # The agent imports the package: the SDK and its HTTP stack must not load with it.
    code = "import sys, sandboxd; assert 'httpx' not in sys.modules and 'sandboxd.sdk' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_control_plane_error_body_maps_to_typed_error():
    c = client_with(lambda req: httpx.Response(404, json=HYBRID_404, headers={"X-Request-ID": "req_1"}))
    with pytest.raises(NotFoundError) as ei:
        c.get_sandbox("sbx")
    e = ei.value
    assert (e.status_code, e.code, e.request_id, e.message) == (404, "sandbox_not_found", "req_1",
                                                                "sandbox sbx not found")
    assert "sandbox sbx not found" in str(e)


@pytest.mark.parametrize("status,cls", [(401, AuthenticationError), (403, PermissionDeniedError),
                                        (500, ServerError), (418, SandboxError)])
def test_status_maps_to_class(status, cls):
    c = client_with(lambda req: httpx.Response(status, text="plain text failure"))
    with pytest.raises(cls) as ei:
        c.kill_sandbox("x")
    assert ei.value.status_code == status and "plain text failure" in ei.value.message


def test_idempotent_requests_retry_5xx_but_create_does_not():
    calls = {"GET": 0, "POST": 0}

    def handler(req):
        calls[req.method] += 1
        if req.method == "GET" and calls["GET"] < 3:
            return httpx.Response(503, json={"code": "busy", "message": "busy"})
        if req.method == "POST":
            return httpx.Response(502, json={"code": "bad_gateway", "message": "down"})
        return httpx.Response(200, json={"id": "sb1", "status": "running"})

    c = client_with(handler)
    assert c.get_sandbox("sb1").id == "sb1" and calls["GET"] == 3
    with pytest.raises(ServerError):
        c.create_sandbox("base")
    assert calls["POST"] == 1  # never replayed: a create is not idempotent


def test_rate_limit_is_retried_then_surfaces_retry_after():
    body = {"error": {"message": "slow down", "code": "rate_limited", "details": {"retry_after_seconds": 0.01}},
            "code": "rate_limited", "message": "slow down"}
    n = []
    c = client_with(lambda req: n.append(1) or httpx.Response(429, json=body))
    with pytest.raises(RateLimitError) as ei:
        c.create_sandbox("base")
    assert ei.value.retry_after == 0.01 and len(n) == 3


def test_transport_failures_become_network_errors():
    def handler(req):
        raise httpx.ConnectError("refused", request=req)

    with pytest.raises(NetworkError) as ei:
        client_with(handler).kill_sandbox("x")
    assert not isinstance(ei.value, httpx.HTTPError)


def test_agent_401_refreshes_token_once_and_replays():
    seen = []
    future = datetime.now(timezone.utc) + timedelta(hours=24)

    def handler(req):
        if req.url.host == "cp.test":
            assert req.url.path == "/v1/sandboxes/sb1/token/refresh" and req.headers["x-api-key"] == "k_test"
            return httpx.Response(200, json={"auth_token": "fresh", "token_expires_at": iso(future)})
        seen.append(req.headers.get("authorization"))
        if req.headers.get("authorization") == "Bearer old":
            return httpx.Response(401, json={"code": "INVALID_TOKEN", "message": "expired"})
        return httpx.Response(200, json={"env_vars": {"A": "1"}})

    c = client_with(handler)
    sb = Sandbox(SandboxInfo("sb1", "running", public_host="http://gw.test"), c, Token("old", future))
    assert sb.env.get_all() == {"A": "1"}
    assert seen == ["Bearer old", "Bearer fresh"]


def test_token_close_to_expiry_is_refreshed_before_use():
    soon = datetime.now(timezone.utc) + timedelta(minutes=2)
    later = datetime.now(timezone.utc) + timedelta(hours=24)
    seen = []

    def handler(req):
        if req.url.host == "cp.test":
            return httpx.Response(200, json={"auth_token": "renewed", "token_expires_at": iso(later)})
        seen.append(req.headers["authorization"])
        return httpx.Response(200, json={"exists": True})

    sb = Sandbox(SandboxInfo("sb1", "running", public_host="http://gw.test"), client_with(handler), Token("t", soon))
    assert sb.files.exists("/x") is True and seen == ["Bearer renewed"]


def test_agent_file_not_found_is_path_not_found():
    body = {"error": "no such file: /nope", "message": "no such file: /nope", "code": "FILE_NOT_FOUND",
            "path": "/nope", "details": {"path": "/nope"}, "request_id": "r", "timestamp": "2026-01-01T00:00:00Z"}
    later = datetime.now(timezone.utc) + timedelta(hours=24)
    c = client_with(lambda req: httpx.Response(404, json=body))
    sb = Sandbox(SandboxInfo("sb1", "running", public_host="http://gw.test"), c, Token("t", later))
    with pytest.raises(PathNotFoundError) as ei:
        sb.files.read("/nope")
    assert ei.value.path == "/nope" and isinstance(ei.value, NotFoundError)


def test_execution_parsing_top_level_rich_keys_and_error():
    ex = Execution.from_wire({"success": False, "stdout": "hi\n", "stderr": "Traceback...\nZeroDivisionError: x",
                              "exit_code": 1, "execution_time": 0.5, "png": "iVBORw0KGgo=", "result": "42",
                              "error": "ZeroDivisionError: division by zero"})
    assert not ex.success and ex.error.name == "ZeroDivisionError" and ex.error.value == "division by zero"
    assert ex.results[0].png == "iVBORw0KGgo=" and ex.pngs == [b"\x89PNG\r\n\x1a\n"]
    assert ex.text == "42"
    ok = Execution.from_wire({"stdout": "", "exit_code": 0,
                              "outputs": [{"type": "display_data", "data": {"text/html": "<b>x</b>"}},
                                          {"type": "execute_result", "data": {"text/plain": "3"}}]})
    assert ok.success and ok.error is None and ok.text == "3" and ok.results[0].html == "<b>x</b>"


def test_list_follows_cursor_pages():
    pages = {None: {"data": [{"id": "a", "status": "running"}], "has_more": True, "next_cursor": "c1"},
             "c1": {"data": [{"id": "b", "status": "paused"}], "has_more": False, "next_cursor": None}}
    c = client_with(lambda req: httpx.Response(200, json=pages[req.url.params.get("cursor")]))
    assert [s.id for s in c.list_sandboxes()] == ["a", "b"]


async def test_async_client_maps_errors_too():
    from sandboxd.sdk import AsyncClient

    c = AsyncClient("k", "http://cp.test",
                    transport=httpx.MockTransport(lambda req: httpx.Response(404, json=HYBRID_404)))
    with pytest.raises(NotFoundError):
        await c.get_sandbox("sbx")
    await c.aclose()


def test_recipe_parsing_and_copy_archive_is_content_addressed(tmp_path):
    from sandboxd.sdk._build import copy_archive, parse_recipe

    r = parse_recipe('FROM code-interpreter\nENV A=1 B="two words"\nRUN echo a \\\n && echo b\n'
                     'COPY app/ /app/\nWORKDIR /app\nCMD ["python", "main.py"]\n')
    assert r.from_image == "code-interpreter"
    assert [s["type"] for s in r.steps] == ["ENV", "ENV", "RUN", "COPY", "WORKDIR"]
    assert r.steps[1]["args"] == ["B", "two words"] and r.steps[2]["args"] == ["echo a  && echo b"]
    assert r.start_cmd == "python main.py"
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print(1)")
    data1, h1 = copy_archive(tmp_path, ["app/"])
    (tmp_path / "app" / "main.py").touch()  # mtime change, same content: same key
    _, h2 = copy_archive(tmp_path, ["app/"])
    (tmp_path / "app" / "main.py").write_text("print(2)")
    _, h3 = copy_archive(tmp_path, ["app/"])
    assert h1 == h2 != h3
    with pytest.raises(SandboxError):
        parse_recipe("RUN echo no from")
    with pytest.raises(SandboxError):
        copy_archive(tmp_path, ["../etc"])


USAGE = {"object": "usage", "from": "2026-11-01T00:00:00.000000Z", "to": "2026-11-02T00:00:00.000000Z",
         "teams": [{"team_id": "team_a", "team_name": "alpha", "sandbox_seconds": 90.5, "vcpu_seconds": 181,
                    "gib_seconds": 45.25, "sandboxes": [{"sandbox_id": "sb1", "template_id": "tpl_base",
                                                          "sandbox_seconds": 90.5, "vcpu_seconds": 181,
                                                          "gib_seconds": 45.25, "vcpu": 2.0, "memory_mb": 512}]}],
         "request_id": "req_1"}


async def test_usage_sends_the_window_and_reads_teams_and_sandboxes():
    from sandboxd.sdk import AsyncClient

    asked = []

    def handler(req: httpx.Request) -> httpx.Response:
        asked.append((req.url.path, dict(req.url.params)))
        return httpx.Response(200, json=USAGE)

    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    got = client_with(handler).usage(start, "2026-11-02", team="alpha")
    async with AsyncClient("k", "http://cp.test", transport=httpx.MockTransport(handler)) as ac:
        assert await ac.usage(sandbox_id="sb1") == got
    assert asked == [("/v1/usage", {"from": "2026-11-01T00:00:00+00:00", "to": "2026-11-02", "team": "alpha"}),
                     ("/v1/usage", {"sandbox_id": "sb1"})]
    assert (got.start, got.end) == (start, start + timedelta(days=1))
    [team] = got.teams
    assert (team.team_name, team.sandbox_seconds, team.vcpu_seconds, team.gib_seconds) == ("alpha", 90.5, 181, 45.25)
    assert [(s.sandbox_id, s.template_id, s.gib_seconds) for s in team.sandboxes] == [("sb1", "tpl_base", 45.25)]
