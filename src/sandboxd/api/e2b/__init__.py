"""The E2B control-plane dialect (issue 6) — included by api/app.py."""
from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
