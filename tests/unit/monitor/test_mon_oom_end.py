"""Ending an OOM-killed sandbox: the sampler and the lifecycle's own watch for dead sandboxes may both find
it; the second to ask is not an error."""
from __future__ import annotations

import logging

from sandboxd.config import Settings
from sandboxd.errors import NotFound
from sandboxd.monitor.service import MonitorService


class _Lifecycle:
    def __init__(self) -> None:
        self.killed: list[tuple[str, str]] = []

    async def kill(self, sid: str, reason: str = "user"):
        if any(s == sid for s, _ in self.killed):
            raise NotFound(f"sandbox {sid} not found", code="sandbox_not_found")
        self.killed.append((sid, reason))


async def test_second_end_of_the_same_oom_is_quiet(store, tmp_path, caplog):
    lc = _Lifecycle()
    mon = MonitorService(Settings(data_dir=tmp_path), store, backend=None, bus=None, lifecycle=lc)
    with caplog.at_level(logging.WARNING):
        await mon._end_oom("sb1")
        await mon._end_oom("sb1")  # the other watcher, a moment later
    assert lc.killed == [("sb1", "oom")]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
