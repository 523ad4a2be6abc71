"""The SDK's egress-policy calls (docs/network.md) against a real control plane: the bodies they send, a bad
entry as an InvalidRequestError naming it, and the fake backend's refusal (501 `egress_not_supported`) as a
ServerError, from the clients and from both sandbox classes. What a policy does to traffic is tested on
real sandboxes in tests/security/test_egress_policy.py and test_egress_names.py."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import httpx
import pytest

from sandboxd.sdk import (
    AsyncClient,
    AsyncSandbox,
    Client,
    DestinationUsage,
    InvalidRequestError,
    NetworkInfo,
    NotFoundError,
    Refusal,
    Sandbox,
    ServerError,
)
from support.network import NETWORK_ANSWER
from support.server import running_server

ANSWER = NETWORK_ANSWER
POLICY = {"allow_out": ["api.example.test", "198.51.100.0/24"], "deny_out": ["0.0.0.0/0"],
          "rules": {"api.example.test": [{"transform": {"headers": {"Authorization": "Bearer x"}}}]},
          "dns_servers": ["192.0.2.53"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The fake backend whatever the suite's default: its refusal is what the SDK must surface here."""
    yield from running_server(tmp_path_factory, "fake")


@pytest.fixture(scope="module")
def sb(server):
    s = Sandbox.create("base", api_key=server.api_key, api_url=server.url, internet_access=True)
    yield s
    s.kill()
    s.close()


class Recording(httpx.HTTPTransport):
    """A real transport that keeps (method, path, JSON body) of each request it carries."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str, object]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.method, request.url.path, json.loads(request.content) if request.content else None))
        return super().handle_request(request)


class AsyncRecording(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str, object]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.method, request.url.path, json.loads(request.content) if request.content else None))
        return await super().handle_async_request(request)


def recording_client(server) -> tuple[Client, Recording]:
    rec = Recording()
    return Client(server.api_key, server.url, transport=rec), rec


def test_a_full_answer_parses():
    n = NetworkInfo.from_wire(ANSWER)
    assert (n.id, n.allow_out, n.deny_out, n.dns_servers) == ("sb1", ["www.example.test"], ["0.0.0.0/0"], None)
    assert n.rules == ANSWER["rules"] and n.raw is ANSWER and n.egress_proxy == ANSWER["egress_proxy"]
    assert (n.denied.packets, n.denied.bytes, n.denied.destinations) == (3, 180, ["203.0.113.81"])
    assert n.denied.refusals == [Refusal(time=datetime.fromtimestamp(1796000000.1, timezone.utc),
                                         destination="www.example.test", address="203.0.113.81", port=443,
                                         reason="name_not_resolved")]
    assert n.usage == [DestinationUsage("www.example.test", 2, 402, 1380, 1),
                       DestinationUsage("198.51.100.7", 1, 60, None, 0)]  # direct traffic: received not counted
    bare = NetworkInfo.from_wire({"id": "sb2", "allow_out": [], "deny_out": [], "dns_servers": ["192.0.2.53"]})
    assert bare.rules == {} and bare.usage == [] and bare.denied.refusals == [] and bare.dns_servers == ["192.0.2.53"]


def test_update_network_returns_the_parsed_answer():
    """The success path the fake backend cannot give: the client's PUT answered as a real backend answers."""
    sent: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        sent.append(req)
        return httpx.Response(200, json=ANSWER)

    with Client("k_test", "http://cp.test", transport=httpx.MockTransport(handler)) as c:
        n = c.update_network("sb/1", allow_out=["www.example.test"], deny_out=["0.0.0.0/0"])
        assert n == NetworkInfo.from_wire(ANSWER) and c.get_network("sb/1") == n
    assert [(r.method, r.url.raw_path) for r in sent] == [("PUT", b"/v1/sandboxes/sb%2F1/network"),
                                                         ("GET", b"/v1/sandboxes/sb%2F1/network")]


def test_an_update_sends_only_what_is_given_and_the_backends_refusal_is_a_server_error(server, sb):
    c, rec = recording_client(server)
    path = f"/v1/sandboxes/{sb.id}/network"
    with c:
        for given, body in [(POLICY, POLICY), ({"allow_internet_access": False}, {"allow_internet_access": False}),
                            ({}, {})]:
            with pytest.raises(ServerError) as e:
                c.update_network(sb.id, **given)
            assert (e.value.status_code, e.value.code) == (501, "egress_not_supported"), e.value
            assert "cannot enforce" in e.value.message and e.value.request_id
            assert rec.sent == [("PUT", path, body)]  # once: a 501 is not retried
            rec.sent.clear()
        with pytest.raises(ServerError) as e:
            c.get_network(sb.id)
        assert (e.value.status_code, e.value.code) == (501, "egress_not_supported")
        assert rec.sent == [("GET", path, None)]


@pytest.mark.parametrize("given, field, entry", [
    ({"allow_out": ["bad host!"]}, "allow_out", "bad host!"),
    ({"deny_out": ["0.0.0.0/0", "10.0.0.300"]}, "deny_out", "10.0.0.300"),
    ({"allow_out": ["2001:db8::1"]}, "allow_out", "2001:db8::1"),
])
def test_a_bad_entry_is_an_invalid_request_naming_it(server, sb, given, field, entry):
    c, _ = recording_client(server)
    with c, pytest.raises(InvalidRequestError) as e:
        c.update_network(sb.id, **given)
    assert (e.value.status_code, e.value.code) == (400, "invalid_network_rule")
    assert e.value.details == {"field": field, "entry": entry} and repr(entry) in e.value.message


def test_the_sandbox_calls_and_an_unknown_sandbox(server, sb):
    with pytest.raises(ServerError) as e:
        sb.update_network(allow_out=["api.example.test"], deny_out=["0.0.0.0/0"])
    assert e.value.code == "egress_not_supported"
    with pytest.raises(ServerError) as e:
        sb.get_network()
    assert e.value.code == "egress_not_supported"
    with pytest.raises(InvalidRequestError) as e:
        sb.update_network(rules={"api.example.test": [{"transform": {"headers": {"X-Key": "a\nb"}}}]})
    assert e.value.details.get("field") == "rules", e.value
    c, _ = recording_client(server)
    with c, pytest.raises(NotFoundError):
        c.update_network("sbnobody", deny_out=["0.0.0.0/0"])


def test_create_sends_the_network_and_is_refused_like_an_update(server):
    c, rec = recording_client(server)
    with c:
        with pytest.raises(InvalidRequestError) as e:
            c.create_sandbox("base", network={"allow_out": ["bad host!"]})
        assert e.value.details == {"field": "allow_out", "entry": "bad host!"}
        assert rec.sent[-1] == ("POST", "/v1/sandboxes", {"template_name": "base",
                                                          "network": {"allow_out": ["bad host!"]}})
        with pytest.raises(ServerError) as e:
            c.create_sandbox("base", internet_access=True, network={"deny_out": ["0.0.0.0/0"]})
        assert (e.value.status_code, e.value.code) == (501, "egress_not_supported")
        # An empty policy is what a sandbox has without one: the fake backend takes it.
        sid = c.create_sandbox("base", network={"allow_out": [], "dns_servers": ["192.0.2.53"]})["id"]
        c.kill_sandbox(sid)
        assert rec.sent[-2][2] == {"template_name": "base", "network": {"allow_out": [], "dns_servers": ["192.0.2.53"]}}
    with pytest.raises(ServerError) as e:
        Sandbox.create("base", api_key=server.api_key, api_url=server.url, internet_access=True,
                       network={"allow_out": ["api.example.test"], "deny_out": ["0.0.0.0/0"]})
    assert e.value.code == "egress_not_supported"


async def test_the_async_twins(server, sb):
    rec = AsyncRecording()
    async with AsyncClient(server.api_key, server.url, transport=rec) as c:
        with pytest.raises(ServerError) as e:
            await c.update_network(sb.id, deny_out=["0.0.0.0/0"], dns_servers=["192.0.2.53"])
        assert (e.value.status_code, e.value.code) == (501, "egress_not_supported")
        assert rec.sent == [("PUT", f"/v1/sandboxes/{sb.id}/network",
                             {"deny_out": ["0.0.0.0/0"], "dns_servers": ["192.0.2.53"]})]
        with pytest.raises(ServerError):
            await c.get_network(sb.id)
        with pytest.raises(InvalidRequestError) as e:
            await c.create_sandbox("base", network={"deny_out": ["bad host!"]})
        assert e.value.details == {"field": "deny_out", "entry": "bad host!"}
        assert rec.sent[-1][2] == {"template_name": "base", "network": {"deny_out": ["bad host!"]}}
    with pytest.raises(InvalidRequestError):
        await AsyncSandbox.create("base", api_key=server.api_key, api_url=server.url,
                                  network={"allow_out": ["bad host!"]})
    asb = await AsyncSandbox.connect(sb.id, api_key=server.api_key, api_url=server.url)
    try:
        with pytest.raises(ServerError) as e:
            await asb.update_network(allow_out=["api.example.test"], allow_internet_access=False)
        assert e.value.code == "egress_not_supported"
        with pytest.raises(ServerError) as e:
            await asb.get_network()
        assert e.value.code == "egress_not_supported"
    finally:
        await asb.aclose()
