"""The route table and the HTTP glue, without an X display: every contract path in both spellings is
routed, errors use the hybrid body, and a sandbox without the packages answers DESKTOP_NOT_AVAILABLE."""
from __future__ import annotations

import json

import httpx
import pytest

from sandboxd.agent.desktop import DesktopService, handle
from sandboxd.agent.desktop.display import Display
from sandboxd.agent.desktop.routes import match

# docs/clients/hopx.md §3.6: Python SDK, JS SDK and docs spellings.
CONTRACT = [
    ("GET", "/desktop/vnc/status"), ("GET", "/desktop/vnc/info"), ("POST", "/desktop/vnc/start"),
    ("GET", "/desktop/vnc/start"), ("POST", "/desktop/vnc/stop"), ("GET", "/desktop/vnc/stop"),
    ("POST", "/desktop/mouse/click"), ("POST", "/desktop/mouse/move"), ("POST", "/desktop/mouse/drag"),
    ("POST", "/desktop/mouse/scroll"), ("POST", "/desktop/keyboard/type"), ("POST", "/desktop/keyboard/press"),
    ("POST", "/desktop/keyboard/combination"), ("GET", "/desktop/clipboard/get"),
    ("POST", "/desktop/clipboard/set"), ("GET", "/desktop/clipboard/history"), ("GET", "/desktop/screenshot"),
    ("POST", "/desktop/screenshot/region"), ("POST", "/desktop/recording/start"),
    ("POST", "/desktop/recording/stop"), ("GET", "/desktop/recording/status"),
    ("GET", "/desktop/recording/download"), ("GET", "/desktop/recording/rec_1/download"),
    ("GET", "/desktop/windows"), ("GET", "/desktop/windows/list"), ("POST", "/desktop/windows/focus"),
    ("POST", "/desktop/windows/close"), ("POST", "/desktop/windows/minimize"),
    ("POST", "/desktop/windows/resize"), ("GET", "/desktop/display"), ("GET", "/desktop/display/info"),
    ("GET", "/desktop/display/available"), ("GET", "/desktop/display/resolutions"),
    ("POST", "/desktop/display/set"), ("POST", "/desktop/display/resolution"), ("POST", "/desktop/x11/ocr"),
    ("POST", "/desktop/x11/find_element"), ("POST", "/desktop/x11/wait_for"), ("POST", "/desktop/x11/drag_drop"),
    ("POST", "/desktop/x11/get_bounds"), ("GET", "/desktop/x11/capture_window"), ("POST", "/desktop/x11/hotkey"),
    ("GET", "/desktop/debug/logs"), ("GET", "/desktop/debug/processes"),
    ("POST", "/desktop/vnc"), ("POST", "/desktop/mouse"), ("POST", "/desktop/keyboard"),
    ("GET", "/desktop/clipboard"), ("POST", "/desktop/clipboard"), ("POST", "/desktop/screenshot"),
    ("POST", "/desktop/recording"), ("GET", "/desktop/display"), ("POST", "/desktop/display"),
]


@pytest.mark.parametrize("method,path", CONTRACT)
def test_every_contract_path_is_routed(method, path):
    handler, _, _ = match(method, path)
    assert handler is not None, f"{method} {path} not routed"


def test_recording_download_path_param():
    _, params, _ = match("GET", "/desktop/recording/rec_abc/download")
    assert params == {"rid": "rec_abc"}


@pytest.fixture
def bare_service(tmp_path, monkeypatch):
    # A sandbox without the desktop packages: nothing on PATH.
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    return DesktopService(Display(199, tmp_path))


@pytest.mark.parametrize("method,path", CONTRACT)
async def test_missing_packages_answer_desktop_not_available(bare_service, method, path):
    resp = await handle(bare_service, method, path, b"", b"{}", {})
    body = json.loads(resp.body)
    assert resp.status == 501
    assert body["code"] == "DESKTOP_NOT_AVAILABLE"
    assert "tigervnc-standalone-server" in body["details"]["missing_dependencies"]
    assert body["missing_dependencies"] == body["details"]["missing_dependencies"]
    assert body["error"] == body["message"] and body["request_id"]
    assert dict(resp.headers)["x-request-id"] == body["request_id"]
    assert not bare_service.display.running


async def test_unknown_path_and_method(bare_service):
    resp = await handle(bare_service, "GET", "/desktop/nope", b"", b"", {"x-request-id": "req_x"})
    assert resp.status == 404 and json.loads(resp.body)["request_id"] == "req_x"
    resp = await handle(bare_service, "DELETE", "/desktop/windows", b"", b"", {})
    assert resp.status == 405 and json.loads(resp.body)["code"] == "METHOD_NOT_ALLOWED"


async def test_invalid_json_is_400(bare_service):
    resp = await handle(bare_service, "POST", "/desktop/mouse/click", b"", b"{not json", {})
    assert resp.status == 400 and json.loads(resp.body)["code"] == "INVALID_JSON"
    resp = await handle(bare_service, "POST", "/desktop/mouse/click", b"", b"[1]", {})
    assert resp.status == 400 and json.loads(resp.body)["code"] == "INVALID_REQUEST"


def test_sdk_raises_desktop_not_available(tmp_path):
    """The real agent in a "sandbox" without the packages: the SDK raises DesktopNotAvailableError."""
    from hopx_ai import Sandbox
    from hopx_ai.errors import DesktopNotAvailableError

    from .conftest import Agent

    agent = Agent(tmp_path, 197, path_env=str(tmp_path / "empty-bin"))
    try:
        sb = Sandbox.debug(agent.url, "tok", sandbox_id="h-bare")
        with pytest.raises(DesktopNotAvailableError):
            sb.desktop.screenshot()
        r = httpx.post(agent.url + "/desktop/mouse/click", json={"x": 1, "y": 1})
        assert r.status_code == 501 and r.json()["code"] == "DESKTOP_NOT_AVAILABLE"
        assert "xdotool" in r.json()["details"]["missing_dependencies"]
        assert r.headers["x-request-id"] and r.headers["content-type"].startswith("application/json")
    finally:
        agent.stop()


def test_register_mounts_on_a_starlette_app(tmp_path, monkeypatch):
    """register(app) is the one call that wires desktop into an ASGI framework app."""
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from sandboxd.agent.desktop import register

    app = Starlette()
    register(app, DesktopService(Display(197, tmp_path)))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with TestClient(app) as client:
        r = client.get("/desktop/vnc/status")
        assert r.status_code == 501 and r.json()["code"] == "DESKTOP_NOT_AVAILABLE"
        r = client.get("/desktop/recording/rec_1/download")
        assert r.status_code == 501
        assert client.get("/desktop/nope").status_code == 404


async def test_bad_argument_types_are_400_not_500(tmp_path):
    """Type errors in arguments are the client's (400 INVALID_REQUEST), checked before any X tool runs."""
    from sandboxd.agent.desktop import deps

    from .conftest import need

    need(deps.CORE)
    service = DesktopService(Display(196, tmp_path))
    cases = [("/desktop/mouse/click", {"x": "a", "y": 1}), ("/desktop/mouse/scroll", {"x": "q", "delta_y": 1}),
             ("/desktop/mouse/scroll", {"delta_y": "down"}), ("/desktop/display/set", {"width": 10**6, "height": 5}),
             ("/desktop/recording/start", {"format": "avi"}), ("/desktop/mouse/click", {"x": 1, "y": 1, "button": "x"})]
    for path, body in cases:
        resp = await handle(service, "POST", path, b"", json.dumps(body).encode(), {})
        assert resp.status == 400, (path, resp.body)
        assert json.loads(resp.body)["code"] == "INVALID_REQUEST"
    await service.shutdown()
