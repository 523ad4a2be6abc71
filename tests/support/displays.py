"""X display numbers for the host desktop tests."""
from __future__ import annotations

import os
from pathlib import Path

_handed_out: set[int] = set()  # one set per process: this module is imported once, as support.displays


def free_display() -> int:
    """A display number no X server holds and this process has not handed out yet: an agent starts its
    display lazily, so a number given earlier may still look free. Each test worker takes its own block: two
    workers' agents could otherwise both pick a number that looked free before either started its server."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    first = 60 + 40 * (int(worker) if worker.isdigit() else 0)
    for n in range(first, first + 40):
        if n not in _handed_out and not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            _handed_out.add(n)
            return n
    raise RuntimeError("no free X display number")
