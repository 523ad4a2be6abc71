"""spec/monitoring.yaml matches the monitoring routes, responses conform to it, and generated input gets no 5xx."""
from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings

from monapi_server import API_KEY

SPEC = Path(__file__).resolve().parents[3] / "spec" / "monitoring.yaml"


def test_every_monitoring_route_is_in_the_spec_and_every_spec_path_is_routed(server):
    doc = yaml.safe_load(SPEC.read_text())
    spec_ops = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops if m != "parameters"}
    app_ops = {(m.upper(), p) for p, ops in server.app.openapi()["paths"].items() for m, op in ops.items()
               if "monitoring" in op.get("tags", [])}
    assert app_ops == spec_ops


schema = schemathesis.openapi.from_path(str(SPEC))


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_conforms_and_no_5xx_under_generated_input(case, server):
    resp = case.call(base_url=server.url, headers={"X-API-Key": API_KEY}, timeout=30)
    assert resp.status_code < 500, f"{case.method} {case.formatted_path} -> {resp.status_code}: {resp.text[:300]}"
    if resp.status_code < 400:
        case.validate_response(resp)
    elif resp.status_code == 405:  # no route matched at all: the app-wide (hybrid) error body
        assert resp.json()["code"] == "method_not_allowed"
    else:
        body = resp.json()
        assert body["code"] == resp.status_code and body["message"]
