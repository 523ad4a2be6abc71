"""recover(): after the daemon restarts (even after SIGKILL), adopt what is still alive and clean up the rest.

- running / paused sandboxes whose container is alive are adopted as they are;
- a sandbox whose create never finished (status "creating") or that was killed but not yet released
  (status "destroying", see OciBackend.destroy(background=True)) is torn down completely;
- a sandbox recorded running whose container died (agent crash, host reboot) becomes stopped: its
  container and network are released, its filesystem kept for start();
- runtime containers with no sandbox directory (a crash between the two) are deleted.

Every sandbox kept claims its recorded uid range again (uidslots.py: the claims live in /run, gone after a
host reboot). A stopped sandbox whose range another daemon took meanwhile gets a free one: its disk stores
the store's ids, not its range's, so nothing on it changes.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sandboxd.runtime.base import RuntimeSandbox
from sandboxd.runtime.oci.state import Record

if TYPE_CHECKING:
    from sandboxd.runtime.oci.backend import OciBackend

log = logging.getLogger("sandboxd.runtime")


async def recover(backend: "OciBackend") -> list[RuntimeSandbox]:
    adopted: list[RuntimeSandbox] = []
    root = backend.settings.sandboxes_dir
    known: set[str] = set()
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        rec = Record.load(d)
        if rec is None or rec.runtime != backend.runtime:
            if rec is None and (d / "disk.img").exists():  # ours, killed before its first record was written
                log.info("recover: removing half-created sandbox %s", d.name)
                await backend.destroy(d.name)
            continue
        known.add(rec.id)
        if rec.status in ("creating", "destroying"):
            log.info("recover: removing %s sandbox %s", "half-created" if rec.status == "creating" else "killed",
                     rec.id)
            await backend.destroy(rec.id)
            continue
        adopted.append(await backend.adopt(rec))
    for cid in await backend.cli.list_ids():
        if cid not in known:
            log.info("recover: deleting orphan container %s", cid)
            await backend.cli.call("kill", cid, "KILL", check=False)
            await backend.cli.call("delete", "--force", cid, check=False)
    return adopted
