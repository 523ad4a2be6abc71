"""Shared test fixtures.

Tests that need root and the real crun backend are marked `real`. Outside CI they skip with a reason
when the host cannot run them; in CI (CI=true) a missing prerequisite is a failure, never a skip,
so the real backend can never silently go untested.
"""
from __future__ import annotations

import pytest

from support.real import IN_CI, TEMPLATES_DIR, real_backend_problem, require_real  # noqa: F401


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
