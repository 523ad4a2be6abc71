"""A webhook reaches only addresses that were checked.

The URL check refuses IPv6 forms that lead to a blocked IPv4 address (6to4, Teredo, NAT64,
IPv4-compatible), and a delivery connects to the address its check resolved: a resolver that
answers a public address to the check and a loopback one afterwards (DNS rebinding) must not get
the signed request to the loopback receiver. Nothing here connects anywhere but loopback: a guard
refuses every other connection before a packet is sent.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from pathlib import Path

import pytest
from aiohttp import web

import sandboxd.core.store.monitoring  # noqa: F401  (registers the tables)
from sandboxd.core import events as ev
from sandboxd.errors import Invalid
from sandboxd.core.eventlog import EventLog
from sandboxd.core.events import EventBus
from sandboxd.core.store import Store, make_engine, upgrade
from sandboxd.monitor.delivery import Dispatcher
from sandboxd.monitor.webhooks import WebhookRegistry, check_url

PUBLIC = "8.8.4.4"  # passes the check; the guard below keeps it unreached
NAME = "hooks.receiver.test"


@pytest.mark.parametrize("host", [
    "[2002:7f00:1::]",          # 6to4 of 127.0.0.1
    "[2002:a9fe:a9fe::1]",      # 6to4 of 169.254.169.254
    "[2002:c0a8:1::]",          # 6to4 of 192.168.0.1
    "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",  # Teredo
    "[64:ff9b::7f00:1]",        # NAT64 of 127.0.0.1
    "[64:ff9b::a00:1]",         # NAT64 of 10.0.0.1
    "[64:ff9b:1::a00:1]",       # local-use NAT64
    "[::7f00:1]",               # IPv4-compatible 127.0.0.1
    "[::a9fe:a9fe]",            # IPv4-compatible 169.254.169.254
    "100.64.0.1",               # shared address space (carrier NAT)
])
def test_ipv6_forms_of_blocked_ipv4_are_refused(host):
    with pytest.raises(Invalid):
        check_url(f"http://{host}/hook", allow_private=False)


def test_6to4_of_a_public_address_is_accepted():
    assert check_url("http://[2002:808:808::1]/hook", allow_private=False) == ["2002:808:808::1"]


def test_every_resolved_address_is_checked(monkeypatch):
    answers = [PUBLIC, "127.0.0.1"]
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *a, **k: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers])
    with pytest.raises(Invalid):
        check_url(f"http://{NAME}/hook", allow_private=False)


@pytest.fixture
def store(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'mon.db'}")
    upgrade(engine)
    yield Store(engine)
    engine.dispose()


@pytest.fixture
async def receiver():
    got: list[dict] = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        got.append(dict(request.headers))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1], got
    await runner.cleanup()


def resolver(monkeypatch, answers: list[str]) -> list[str]:
    """The system resolver for NAME: each lookup takes the next answer, the last one sticks. Lookups of
    address literals answer themselves, as getaddrinfo does."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host, port, *a, **k):
        if host != NAME:
            return real(host, port, *a, **k)
        ip = answers[min(len(asked), len(answers) - 1)]
        asked.append(ip)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def loopback_only(monkeypatch) -> list[str]:
    """Refuses, before any packet, every TCP connection that is not to loopback; records the targets."""
    real = asyncio.base_events.BaseEventLoop.create_connection
    targets: list[str] = []

    async def create_connection(self, factory, host=None, port=None, *a, **k):
        targets.append(host)
        if not ipaddress.ip_address(host).is_loopback:
            raise ConnectionRefusedError(f"test guard: {host} is not loopback")
        return await real(self, factory, host, port, *a, **k)

    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "create_connection", create_connection)
    return targets


async def deliver_once(store, port: int, *, allow_private: bool) -> dict:
    reg = WebhookRegistry(store, allow_private=True)  # registered while the name still answered anything
    hook = reg.create({"name": "h", "url": f"http://{NAME}:{port}/hook", "events": [ev.CREATED], "signatureSecret": "s"})
    EventLog(store, EventBus()).record(ev.Event(ev.CREATED, "sb1", {}))
    d = Dispatcher(store, None, timeout=5.0, max_attempts=1, backoff=0.05, allow_private=allow_private)
    await d.start()
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + 30
        while not reg.deliveries(hook["id"]) or reg.deliveries(hook["id"])[0]["deliveryStatus"] == "pending":
            assert loop.time() < end, "no outcome"
            await asyncio.sleep(0.05)
    finally:
        await d.stop()
    return reg.deliveries(hook["id"])[0]


async def test_rebinding_after_the_check_does_not_reach_loopback(store, receiver, monkeypatch):
    port, got = receiver
    asked = resolver(monkeypatch, ["127.0.0.1", PUBLIC, "127.0.0.1"])  # registration, delivery check, then any later lookup
    targets = loopback_only(monkeypatch)
    out = await deliver_once(store, port, allow_private=False)
    assert asked[:2] == ["127.0.0.1", PUBLIC]
    assert got == []  # the signed request never reached the loopback receiver
    assert out["deliveryStatus"] == "failed"
    assert targets == [PUBLIC]  # the one connection went to the checked address (and the guard refused it)


async def test_delivery_connects_to_the_checked_address_with_the_name_as_host(store, receiver, monkeypatch):
    port, got = receiver
    resolver(monkeypatch, ["127.0.0.1", "127.0.0.1", PUBLIC])  # a later lookup would lead away from the receiver
    targets = loopback_only(monkeypatch)
    out = await deliver_once(store, port, allow_private=True)
    assert out["deliveryStatus"] == "delivered"
    assert targets == ["127.0.0.1"]
    assert len(got) == 1 and got[0]["Host"] == f"{NAME}:{port}"
