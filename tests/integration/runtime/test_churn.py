"""Create and destroy 50 sandboxes (some with internet access, several at a time): nothing is left behind."""
from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from support.runtime import leftovers, spec
from sandboxd.runtime import network
from sandboxd.runtime.base import Resources

pytestmark = [pytest.mark.real, pytest.mark.slow]


def _host_snapshot() -> dict:
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout)
    return {"veths": sorted(l["ifname"] for l in links if l["ifname"].startswith("vh")),
            "nft": subprocess.run(["nft", "list", "table", "inet", "sandboxd"], capture_output=True, text=True).stdout}


def test_fifty_sandboxes_leave_nothing(rt_env):
    settings, sb, image = rt_env
    specs = [spec(image, "churn", internet_access=(i % 3 == 0),
                  resources=Resources(memory_mb=128, disk_mb=64, pids=64)) for i in range(50)]
    backend = sb.backend

    async def one(s, gate):
        async with gate:
            await backend.create(s)
            r = await backend.exec(s.id, ["true"])
            assert r.exit_code == 0
            await backend.destroy(s.id)

    async def all_of_them():
        gate = asyncio.Semaphore(5)
        await asyncio.gather(*(one(s, gate) for s in specs))

    sb.loop.run_until_complete(all_of_them())
    for s in specs:
        assert leftovers(settings, s.id) == [], s.id
    assert sb.loop.run_until_complete(backend.cli.list_ids()) == []
    after = _host_snapshot()
    # other sandboxes on the host (other tests, other daemons) may come and go meanwhile: only ours must be gone,
    # from the links and from every rule and set of our nft table
    ours = {network.names(s.id)[1] for s in specs}
    assert not ours & set(after["veths"])
    assert not [veth for veth in ours if veth in after["nft"]]
