"""Accessors for the control plane the app serves (kept on app.state)."""
from __future__ import annotations

from fastapi import Request

from sandboxd.wiring import ControlPlane


def services(request: Request) -> ControlPlane:
    return request.app.state.services


def rid(request: Request) -> str:
    return getattr(request.state, "request_id", "req_unknown")
