"""Accessors for the control plane the app serves (kept on app.state by api/app.py)."""
from __future__ import annotations

from fastapi import Request

from sandboxd.api.metrics_feed import MetricsHub
from sandboxd.monitor.service import MonitorService
from sandboxd.wiring import ControlPlane


def services(request: Request) -> ControlPlane:
    return request.app.state.services


def monitor(request: Request) -> MonitorService:
    return services(request).monitor


def metrics_hub(request: Request) -> MetricsHub:
    return request.app.state.metrics_hub


def rid(request: Request) -> str:
    return getattr(request.state, "request_id", "req_unknown")
