"""Monitoring routes (webhooks) — owned by the monitoring work (issue 5); included by api/app.py."""
from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
