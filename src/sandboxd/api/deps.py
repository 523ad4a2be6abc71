"""Accessors for the services the app's lifespan built (kept on app.state)."""
from __future__ import annotations

from fastapi import Request

from sandboxd.core.services import Services


def services(request: Request) -> Services:
    return request.app.state.services


def rid(request: Request) -> str:
    return getattr(request.state, "request_id", "req_unknown")
