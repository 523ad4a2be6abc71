"""E2B sandbox metrics and the Prometheus endpoint over HTTP; parsed by the official E2B SDK's own models."""
from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from sandboxd.monitor.series import Sample
from test_monitoring_events import add_sandbox

NINE = {"timestamp", "timestampUnix", "cpuCount", "cpuUsedPct", "memUsed", "memTotal", "memCache", "diskUsed", "diskTotal"}


@pytest.fixture(scope="module")
def sampled(server):
    add_sandbox(server, "sbmetrics1")
    add_sandbox(server, "sbmetrics2")
    add_sandbox(server, "sbmetrics3")
    now = int(time.time())
    server.monitor.series.write([
        Sample("sbmetrics1", now - 20, 2.0, 12.5, 30 << 20, 512 << 20, 1 << 20, 100 << 20, 2048 << 20),
        Sample("sbmetrics1", now - 10, 2.0, 99.0, 31 << 20, 512 << 20, 1 << 20, 101 << 20, 2048 << 20),
        Sample("sbmetrics2", now - 5, 1.0, 1.0, 5 << 20, 256 << 20, 0, 7 << 20, 1024 << 20),
    ])
    return now


def test_history_has_all_nine_fields_and_filters_by_time(server, sampled):
    c = server.client
    got = c.get("/sandboxes/sbmetrics1/metrics").json()
    assert [m["cpuUsedPct"] for m in got] == [12.5, 99.0]
    assert all(set(m) == NINE for m in got)
    assert got[0]["timestampUnix"] == sampled - 20 and got[0]["cpuCount"] == 2 and got[0]["memTotal"] == 512 << 20
    got = c.get("/sandboxes/sbmetrics1/metrics", params={"start": sampled - 15, "end": sampled}).json()
    assert [m["cpuUsedPct"] for m in got] == [99.0]
    assert c.get("/sandboxes/sbmetrics3/metrics").json() == []  # no sample yet: empty, as E2B documents


def test_bad_ranges_and_unknown_sandboxes(server, sampled):
    c = server.client
    assert c.get("/sandboxes/sbmetrics1/metrics", params={"start": 10, "end": 5}).status_code == 400
    assert c.get("/sandboxes/sbmetrics1/metrics", params={"start": "yesterday"}).status_code == 400
    assert c.get("/sandboxes/sbmetrics1/metrics", params={"start": "nan"}).status_code == 400
    assert c.get("/sandboxes/sbnosuch/metrics").status_code == 404


def test_latest_per_sandbox(server, sampled):
    c = server.client
    r = c.get("/sandboxes/metrics", params={"sandbox_ids": "sbmetrics1,sbmetrics2,sbmetrics3"})
    assert r.status_code == 200
    got = r.json()["sandboxes"]
    assert set(got) == {"sbmetrics1", "sbmetrics2"} and got["sbmetrics1"]["cpuUsedPct"] == 99.0
    assert c.get("/sandboxes/metrics", params={"sandbox_ids": "a,a"}).status_code == 400
    assert c.get("/sandboxes/metrics").status_code == 400
    assert c.get("/sandboxes/metrics", params={"sandbox_ids": ",".join(f"s{i}" for i in range(101))}).status_code == 400


def test_the_official_e2b_sdk_parses_them(server, sampled):
    from e2b import Sandbox

    metrics = Sandbox.get_metrics("sbmetrics1", api_key="monitoring-api-test-key", api_url=server.url,
                                  start=datetime.fromtimestamp(sampled - 60, timezone.utc))
    assert [m.cpu_used_pct for m in metrics] == [12.5, 99.0]
    assert metrics[1].mem_used == 31 << 20 and metrics[1].disk_total == 2048 << 20 and metrics[1].cpu_count == 2


def test_prometheus_text(server, sampled):
    r = server.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'sandboxd_sandboxes{state="running"}' in text
    for name in ("sandboxd_sandbox_creates_total", "sandboxd_sandbox_create_failures_total",
                 "sandboxd_sandbox_create_seconds_bucket", 'sandboxd_webhook_deliveries_total{outcome="delivered"}',
                 "sandboxd_sampler_lag_seconds"):
        assert name in text, name
    assert "sandboxd_sandbox_cpu_percent" not in text  # per-sandbox series only behind the switch
