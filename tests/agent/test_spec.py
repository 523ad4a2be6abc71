"""spec/agent.yaml and the agent's route table describe the same API; live responses match the schemas."""
from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from sandboxd.agent.app import CORE_ROUTES, App
from sandboxd.agent.services import Services

SPEC = yaml.safe_load((Path(__file__).resolve().parents[2] / "spec" / "agent.yaml").read_text())
METHODS = {"get", "post", "put", "patch", "delete"}


def core_routes() -> set[tuple[str, str]]:
    app = App(Services(workspace="/tmp"))
    for name in CORE_ROUTES:
        app.include(name)
    return {(r.method, r.pattern) for r in app.routes}


def spec_routes() -> set[tuple[str, str]]:
    return {(m.upper(), p) for p, ops in SPEC["paths"].items() for m in ops if m in METHODS}


def test_every_route_is_in_the_spec_and_every_spec_path_is_routed():
    routes, spec = core_routes(), spec_routes()
    assert routes - spec == set(), "routed but not documented"
    assert spec - routes == set(), "documented but not routed"


def test_websocket_routes_are_marked():
    app = App(Services(workspace="/tmp"))
    for name in CORE_ROUTES:
        app.include(name)
    ws = {r.pattern for r in app.routes if r.websocket}
    assert ws == {p for p, ops in SPEC["paths"].items() if ops.get("get", {}).get("x-websocket")}


def _schema(name: str) -> dict:
    # resolve local $refs by inlining components (enough for validation with jsonschema)
    return {"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]}


@pytest.mark.parametrize("method,path,body,schema", [
    ("POST", "/execute", {"code": "print(1)"}, "ExecuteResult"),
    ("POST", "/execute", {"code": "exit 2", "language": "bash"}, "ExecuteResult"),
    ("GET", "/metrics/snapshot", None, "Metrics"),
    ("GET", "/system", None, "System"),
    ("GET", "/health", None, "Health"),
    ("GET", "/files/list", None, "FileList"),
    ("GET", "/execute/processes", None, "Jobs"),
    ("GET", "/files/read?path=/nonexistent-sandboxd", None, "Error"),
])
def test_live_responses_match_schemas(client, method, path, body, schema):
    r = client.request(method, path, json=body)
    data = r.json()
    # the nullable keyword is OpenAPI 3.0; drop None values the schema marks nullable
    jsonschema.validate({k: v for k, v in data.items() if v is not None}, _schema(schema))
