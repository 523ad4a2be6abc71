"""Requests to the control plane and the gateway are counted and timed by route template and status class."""
from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import httpx
import pytest

from support.server import CPServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = CPServer(tmp_path_factory.mktemp("httpm")).start()
    yield srv
    srv.close()


def scrape(srv) -> str:
    r = httpx.get(srv.base + "/metrics", headers={"X-API-Key": srv.key})
    assert r.status_code == 200
    return r.text


def value(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line[:line.rindex("}")]))
        if all(got.get(k) == v for k, v in labels.items()) and len(got) == len(labels):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_api_requests_are_counted_by_route_template_not_by_id(server):
    ids = [f"sb-{secrets.token_hex(6)}" for _ in range(3)]
    labels = dict(server="api", route="/v1/sandboxes/{sandbox_id}", method="GET", status="4xx")
    before = value(scrape(server), "sandboxd_http_requests_total", **labels)
    with server.client() as c:
        for sid in ids:
            assert c.get(f"/v1/sandboxes/{sid}").status_code == 404
    text = scrape(server)
    assert value(text, "sandboxd_http_requests_total", **labels) == before + 3
    assert value(text, "sandboxd_http_request_duration_seconds_count", **labels) == before + 3
    assert value(text, "sandboxd_http_request_duration_seconds_bucket", le="+Inf", **labels) == before + 3
    assert not any(sid in text for sid in ids)


def test_unrouted_paths_and_odd_methods_fall_into_other(server):
    httpx.get(server.base + f"/no/such/{secrets.token_hex(4)}")
    httpx.request("FROBNICATE", server.base + "/health")
    text = scrape(server)
    assert value(text, "sandboxd_http_requests_total", server="api", route="other", method="GET", status="4xx") >= 1
    assert value(text, "sandboxd_http_requests_total", server="api", route="/health", method="other",
                 status="4xx") >= 1
    assert "FROBNICATE" not in text


def test_gateway_requests_are_counted_by_agent_route_family(server):
    with server.client() as c:
        sb = c.post("/v1/sandboxes", json={"template_name": "base"}).json()
    try:
        auth = {"Authorization": f"Bearer {sb['auth_token']}"}
        labels = dict(server="gateway", route="/health", method="GET", status="2xx")
        before = value(scrape(server), "sandboxd_http_requests_total", **labels)
        with httpx.Client(base_url=server.gateway) as gw:
            for _ in range(2):
                assert gw.get("/health", headers=auth).status_code == 200
            assert gw.get(f"/files/read?path=/tmp/{secrets.token_hex(4)}", headers=auth).status_code >= 400
            assert gw.get("/health").status_code == 401  # no token: refused before routing
        text = scrape(server)
        assert value(text, "sandboxd_http_requests_total", **labels) == before + 2
        assert sum(value(text, "sandboxd_http_requests_total", server="gateway", route="/files", method="GET",
                         status=cls) for cls in ("4xx", "5xx")) == 1
        assert value(text, "sandboxd_http_requests_total", server="gateway", route="other", method="GET",
                     status="4xx") >= 1
    finally:
        with server.client() as c:
            c.delete(f"/v1/sandboxes/{sb['id']}")


DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "sandboxd.json"


def served_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {name + "_bucket", name + "_count", name + "_sum"}
            elif kind == "counter" and not name.endswith("_total"):
                names.add(name + "_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_the_grafana_dashboard_queries_only_metrics_that_are_served(server):
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 15
    queried = {n for e in exprs for n in re.findall(r"\bsandboxd_[a-z0-9_]+", e)}
    assert {"sandboxd_http_requests_total", "sandboxd_http_request_duration_seconds_bucket"} <= queried
    assert queried - served_names(scrape(server)) == set()
