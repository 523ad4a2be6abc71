"""The real runtime's module fixture, shared with tests/support/runtime.py."""
from __future__ import annotations

from support.runtime import rt_env  # noqa: F401  (the fixture)
