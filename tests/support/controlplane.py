"""A control plane built in process (fake backend) and ended without leaving its sandboxes' agents behind."""
from __future__ import annotations


async def stop_clean(svc) -> None:
    """Kill what the test left alive, then stop: stopping alone keeps the sandboxes (a restart adopts them),
    and on the fake backend their agents would outlive the test as host processes."""
    try:
        for sb in svc.lifecycle.live_sandboxes():
            await svc.lifecycle.kill(sb.id)
    finally:
        await svc.stop()
