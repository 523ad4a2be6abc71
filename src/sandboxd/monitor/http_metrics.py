"""HTTP requests answered by the control plane and the gateway: a count and a latency histogram by server,
route template, method and status class (docs/monitoring.md).

Labels are bounded: a route is the template (`/v1/sandboxes/{sandbox_id}`, never an id), methods outside the
standard few and requests that matched no route fall into `other`. The labelled children are cached, so an
observation is a dict lookup, a counter increment and a histogram bucket.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

OTHER = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# From a gateway round trip (~1 ms) to a slow create or build call.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LABELS = ("server", "route", "method", "status")


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter("sandboxd_http_requests_total", "HTTP requests answered", LABELS, registry=registry)
        self.latency = Histogram("sandboxd_http_request_duration_seconds",
                                 "Time from a request's arrival to its answer's head", LABELS, buckets=BUCKETS,
                                 registry=registry)
        self._children: dict[tuple[str, str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, server: str, route: str, method: str, status: int, seconds: float) -> None:
        # Normalised before the cache lookup: a client picks the method, a sandbox's app the status.
        key = (server, route, method if method in METHODS else OTHER, status // 100)
        pair = self._children.get(key)
        if pair is None:
            labels = (*key[:3], f"{key[3]}xx")
            pair = self._children[key] = (self.requests.labels(*labels), self.latency.labels(*labels))
        pair[0].inc()
        pair[1].observe(seconds)
