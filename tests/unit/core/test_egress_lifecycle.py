"""The lifecycle's side of egress policies (docs/network.md), over the fake backend seen as one that can
enforce them: what a create hands the runtime, what an update stores, records and refuses. The kernel side:
tests/conformance/test_backends.py and tests/security/test_egress_policy.py."""
from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from sandboxd.config import Settings
from sandboxd.core import events as ev
from sandboxd.core.egress import ALL_TRAFFIC, EgressPolicy
from sandboxd.core.lifecycle import CreateRequest
from sandboxd.errors import Conflict
from sandboxd.runtime.base import Egress, EgressDenied
from sandboxd.wiring import ControlPlane
from support.controlplane import stop_clean


class Enforcing:
    """The fake backend, with `network` declared and the egress calls recorded instead of enforced."""

    def __init__(self, inner):
        self.inner = inner
        self.capabilities = replace(inner.capabilities, network=True)
        self.at_create: dict[str, Egress | None] = {}
        self.set: dict[str, list[Egress]] = {}

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def create(self, spec):
        self.at_create[spec.id] = spec.egress
        return await self.inner.create(spec)

    async def set_egress(self, sandbox_id, egress):
        self.set.setdefault(sandbox_id, []).append(egress)

    async def egress_denied(self, sandbox_id):
        return EgressDenied(packets=7, bytes=420, destinations=("192.0.2.9",))


@pytest.fixture
def settings(tmp_path, db_url):
    return Settings(data_dir=tmp_path / "data", backend="fake", database_url=db_url)


def test_rules_reach_the_runtime_at_create_and_on_update(settings):
    async def run():
        svc = ControlPlane.build(settings)
        await svc.start()
        backend = svc.lifecycle.backend = Enforcing(svc.lifecycle.backend)
        q = svc.bus.subscribe()
        try:
            # Rules imply internet access; E2B's allow_internet_access=false with allowOut is "nothing but these".
            a, _, _ = await svc.lifecycle.create(CreateRequest(template_name="base", egress=EgressPolicy(
                allow_out=("203.0.113.80",))))
            b, _, _ = await svc.lifecycle.create(CreateRequest(template_name="base", internet_access=False,
                                                               egress=EgressPolicy(allow_out=("203.0.113.80",))))
            c, _, _ = await svc.lifecycle.create(CreateRequest(template_name="base", internet_access=False,
                                                               egress=EgressPolicy(deny_out=(ALL_TRAFFIC,))))
            assert a.internet_access and backend.at_create[a.id] == Egress(allow=("203.0.113.80/32",))
            assert b.internet_access and backend.at_create[b.id] == Egress(("203.0.113.80/32",), ("0.0.0.0/0",))
            assert b.egress == {"allow_out": ["203.0.113.80"], "deny_out": [ALL_TRAFFIC], "dns_servers": None}
            assert not c.internet_access and backend.at_create[c.id] is None  # no network to guard

            new = EgressPolicy(deny_out=("198.51.100.0/24",))
            got = await svc.lifecycle.set_egress(a.id, new)
            assert got.egress == new.to_dict() and backend.set[a.id] == [Egress(deny=("198.51.100.0/24",))]
            assert svc.lifecycle.get(a.id).egress == new.to_dict()
            await svc.lifecycle.stop(a.id)  # a stopped sandbox's backend keeps the rules for its start
            await svc.lifecycle.set_egress(a.id, EgressPolicy())
            assert backend.set[a.id][-1] == Egress()
            assert (await svc.lifecycle.egress_denied(a.id)).packets == 7

            # Without internet access there is no interface to open: allowing is refused, denying stored.
            with pytest.raises(Conflict) as err:
                await svc.lifecycle.set_egress(c.id, EgressPolicy(allow_out=("203.0.113.80",)))
            assert err.value.code == "no_internet_access"
            await svc.lifecycle.set_egress(c.id, EgressPolicy(deny_out=("192.0.2.1",)))
            assert c.id not in backend.set and (await svc.lifecycle.egress_denied(c.id)).packets == 0

            updates = []
            while not q.empty():
                e = q.get_nowait()
                if e.type == ev.UPDATED and "network" in e.data:
                    updates.append((e.sandbox_id, e.data["network"]))
            assert updates == [(a.id, new.to_dict()), (a.id, EgressPolicy().to_dict()),
                               (c.id, EgressPolicy(deny_out=("192.0.2.1",)).to_dict())]
        finally:
            await stop_clean(svc)

    asyncio.run(run())
