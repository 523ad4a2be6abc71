"""spec/monitoring.yaml matches the monitoring routes, responses conform to it, and generated input gets no 5xx."""
from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings

from monitoring_server import API_KEY
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

SPEC = Path(__file__).resolve().parents[3] / "spec" / "monitoring.yaml"


def test_every_monitoring_route_is_in_the_spec_and_every_spec_path_is_routed(server):
    doc = yaml.safe_load(SPEC.read_text())
    spec_ops = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops if m != "parameters"}
    app_ops = {(m.upper(), p) for p, ops in server.app.openapi()["paths"].items() for m, op in ops.items()
               if "monitoring" in op.get("tags", [])}
    assert app_ops == spec_ops


schema = schemathesis.openapi.from_path(str(SPEC))


@pytest.fixture(autouse=True)
def _drop_generated_webhooks(server):
    """Generated webhooks must not receive the events of later tests (they would post to made-up hosts)."""
    yield
    for w in server.client.get("/events/webhooks").json():
        server.client.delete(f"/events/webhooks/{w['id']}")


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_conforms_and_no_5xx_under_generated_input(case, server):
    resp = case.call(base_url=server.url, headers={"X-API-Key": API_KEY}, timeout=30)
    assert resp.status_code < 500, f"{case.method} {case.formatted_path} -> {resp.status_code}: {resp.text[:300]}"
    if resp.status_code < 400:
        # Shape checks only: like every HTTP API we ignore unknown query parameters, which schemathesis's
        # negative-data check would call a failure.
        case.validate_response(resp, checks=[response_schema_conformance, content_type_conformance])
    elif resp.status_code == 405 or case.path == "/metrics":  # not E2B routes: the API's hybrid error body
        body = resp.json()
        assert body["error"]["code"] == body["code"] and isinstance(body["code"], str)
    else:
        body = resp.json()
        assert body["code"] == resp.status_code and body["message"]
