"""Shared test fixtures.

Tests that need root and the real crun backend are marked `real`. Outside CI they skip with a reason
when the host cannot run them; in CI (CI=true) a missing prerequisite is a failure, never a skip,
so the real backend can never silently go untested.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TEMPLATES_DIR = Path(os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates"))


def real_backend_problem() -> str | None:
    """Why real sandboxes cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root"
    if not shutil.which("crun"):
        return "crun is not installed (scripts/install.sh installs it)"
    if not TEMPLATES_DIR.is_dir() or not any(TEMPLATES_DIR.iterdir()):
        return f"no built templates in {TEMPLATES_DIR} (scripts/install.sh builds them)"
    return None


def require_real() -> None:
    problem = real_backend_problem()
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"real backend unavailable in CI: {problem}")
    pytest.skip(problem)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("real"):
            item.add_marker(pytest.mark.usefixtures("_real_backend_required"))


@pytest.fixture
def _real_backend_required():
    require_real()


@pytest.fixture
def receiver():
    """A real webhook receiver on loopback (tests/support/receiver.py), closed after the test."""
    from support.receiver import Receiver

    r = Receiver()
    yield r
    r.close()
