from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "runtime"))

from rtsupport import SyncBackend, base_image, cleanup, make_settings, require_real  # noqa: E402


@pytest.fixture(scope="module")
def rt_env():
    """(settings, backend, base image) for one module; everything it made is destroyed afterwards."""
    require_real()
    from sandboxd.runtime import get_backend

    settings = make_settings("crun")
    sb = SyncBackend(get_backend(settings))
    try:
        yield settings, sb, base_image(settings)
    finally:
        cleanup(settings, sb)
        sb.close()
