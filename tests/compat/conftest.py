"""Compat suites: the official clients, unmodified, against a real `sandboxd serve`. Each suite runs on
the fake backend (fast, no root) and on the real crun backend (marked real: skipped outside CI when the
host cannot run it, a failure in CI)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "sdk"))

from sdkserver import IN_CI, running_server  # noqa: E402


def real_problem() -> str | None:
    import os
    import shutil

    from sdkserver import SHARED_TEMPLATES

    if os.geteuid() != 0:
        return "needs root"
    if not shutil.which("crun"):
        return "crun is not installed"
    images = Path(SHARED_TEMPLATES) / "images"
    if not images.is_dir() or not any(images.iterdir()):
        return f"no built templates in {SHARED_TEMPLATES} (scripts/install.sh builds them)"
    return None


@pytest.fixture(scope="session", params=["fake", pytest.param("crun", marks=pytest.mark.real)])
def hopx_server(request, tmp_path_factory):
    if request.param == "crun" and (problem := real_problem()):
        if IN_CI:
            pytest.fail(f"real backend unavailable in CI: {problem}")
        pytest.skip(problem)
    yield from running_server(tmp_path_factory, request.param)
