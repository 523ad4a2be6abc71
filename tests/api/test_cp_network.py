"""Egress policy over the API (docs/network.md): each bad entry is a 400 that names it, and a backend that cannot enforce a policy refuses it (501) instead of
storing it. What a policy does to traffic: tests/security/test_egress_policy.py (real sandboxes)."""
from __future__ import annotations

import pytest

E2B = "/sandboxes"


@pytest.mark.parametrize("network, field, code, says", [
    ({"allowOut": ["*.*.example.com"]}, "allowOut", "invalid_network_rule", "is not an IP address"),
    ({"allowOut": ["1.2.3.4/33"]}, "allowOut", "invalid_network_rule", "'1.2.3.4/33' is not"),
    ({"denyOut": ["2001:db8::1"]}, "denyOut", "invalid_network_rule", "IPv6"),
    ({"allowOut": ["bad host!"]}, "allowOut", "invalid_network_rule", "'bad host!' is not"),
    ({"allowOut": [7]}, "allowOut", "invalid_network_rule", "7 is not"),
    ({"allowOut": "1.2.3.4"}, "allowOut", "invalid_network_rule", "must be a list"),
    ({"dnsServers": ["dns.example"]}, "dnsServers", "invalid_network_rule", "not an IPv4 address"),
    ({"rules": {"api.example.com": [{"transform": {"headers": {"X": "1\n2"}}}]}}, "rules",
     "invalid_network_rule", "one-line value"),
    ({"egressProxy": {"address": "proxy.example"}}, "egressProxy", "invalid_network_rule", "is not host:port"),
    ({"egressProxy": {"address": "proxy.example:1080", "password": "p"}}, "egressProxy", "invalid_network_rule",
     "needs a username"),
])
def test_e2b_bad_entries_are_a_400_naming_them(client, sandbox, network, field, code, says):
    r = client.post(E2B, json={"templateID": "base", "network": network})
    assert r.status_code == 400, r.text
    assert r.json()["error_code"] == code and field in r.json()["message"] and says in r.json()["message"]
    r = client.put(f"{E2B}/{sandbox['id']}/network", json=network)
    assert r.status_code == 400 and r.json()["error_code"] == code, r.text


def test_hopx_bad_entries_are_a_400_naming_them(client, sandbox):
    url = f"/v1/sandboxes/{sandbox['id']}/network"
    r = client.put(url, json={"allow_out": ["example..com"], "deny_out": ["0.0.0.0/0"]})
    assert r.status_code == 400 and r.json()["code"] == "invalid_network_rule", r.text
    assert r.json()["details"] == {"field": "allow_out", "entry": "example..com"}
    r = client.put(url, json={"deny_out": ["10.0.0.300"]})
    assert r.status_code == 400 and "'10.0.0.300'" in r.json()["message"], r.text
    r = client.put(url, json={"allowOut": ["1.2.3.4"]})  # the HopX route takes snake_case only
    assert r.status_code == 400, r.text


def test_a_backend_without_a_network_refuses_a_policy_instead_of_storing_it(client, sandbox):
    """The fake backend runs sandboxes as host processes: nothing could enforce the rules."""
    sid = sandbox["id"]
    r = client.put(f"{E2B}/{sid}/network", json={"denyOut": ["0.0.0.0/0"]})
    assert r.status_code == 501 and r.json()["error_code"] == "egress_not_supported", r.text
    r = client.put(f"/v1/sandboxes/{sid}/network", json={"deny_out": ["0.0.0.0/0"]})
    assert r.status_code == 501 and r.json()["code"] == "egress_not_supported", r.text
    assert client.get(f"{E2B}/{sid}").json()["network"] == {"allowOut": [], "denyOut": [], "allowPublicTraffic": True}
    assert client.get(f"/v1/sandboxes/{sid}").json()["network"] is None  # none stored
    r = client.post(E2B, json={"templateID": "base", "allow_internet_access": True,
                               "network": {"allowOut": ["1.2.3.4"], "denyOut": ["0.0.0.0/0"]}})
    assert r.status_code == 501 and r.json()["error_code"] == "egress_not_supported", r.text
    assert client.get(f"/v1/sandboxes/{sid}/network").status_code == 501


def test_an_empty_policy_is_what_a_sandbox_has_without_one(client):
    r = client.post(E2B, json={"templateID": "base", "network": {"allowPublicTraffic": False, "allowOut": [],
                                                                 "dnsServers": ["192.0.2.53"]}})
    assert r.status_code == 201, r.text
    sid = r.json()["sandboxID"]
    try:
        assert client.get(f"{E2B}/{sid}").json()["network"] == {
            "allowOut": [], "denyOut": [], "allowPublicTraffic": False, "dnsServers": ["192.0.2.53"]}
    finally:
        client.delete(f"{E2B}/{sid}")


def test_unknown_sandbox_is_a_404(client):
    assert client.put(f"{E2B}/sbnobody/network", json={}).status_code == 404
    assert client.put("/v1/sandboxes/sbnobody/network", json={}).status_code == 404
    assert client.get("/v1/sandboxes/sbnobody/network").status_code == 404


def test_hopx_create_takes_the_policy_and_checks_it_first(client):
    r = client.post("/v1/sandboxes", json={"template_name": "base", "network": {"allow_out": ["api..example.com"]}})
    assert r.status_code == 400 and r.json()["code"] == "invalid_network_rule", r.text
    r = client.post("/v1/sandboxes", json={"template_name": "base", "internet_access": True,
                                           "network": {"deny_out": ["0.0.0.0/0"]}})
    assert r.status_code == 501 and r.json()["code"] == "egress_not_supported", r.text
