"""Whether real sandboxes (root, crun, built templates) can run here. Outside CI a test that needs them
skips with the reason; in CI (CI=true) a missing prerequisite is a failure, never a skip, so the real
backend can never silently go untested."""
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
    images = TEMPLATES_DIR / "images"
    if not images.is_dir() or not any(images.iterdir()):
        return f"no built templates in {TEMPLATES_DIR} (scripts/install.sh builds them)"
    return None


def require_real() -> None:
    problem = real_backend_problem()
    if problem is not None:
        unavailable(f"real backend unavailable: {problem}")


def unavailable(reason: str) -> None:
    """Outside CI a part that cannot run here is a skip with the reason; in CI it is a failure."""
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def client_backends() -> list:
    """The backends the client suites (CLI, SDK, the official clients) run on. They test the clients and
    the API, not the backend (tests/conformance holds the backends to one contract), so one is enough: the
    real one wherever it can run, and always in CI; the fake one elsewhere.
    SANDBOXD_TEST_BACKENDS=fake,crun runs both."""
    chosen = os.environ.get("SANDBOXD_TEST_BACKENDS", "")
    names = [n.strip() for n in chosen.split(",") if n.strip()] or (
        ["crun"] if IN_CI or real_backend_problem() is None else ["fake"])
    return [pytest.param(n, marks=pytest.mark.real) if n == "crun" else n for n in names]
