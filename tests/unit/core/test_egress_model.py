"""The egress policy model (core/egress.py): entries in their stored form, each bad one refused by name,
E2B's shorthands, and what reaches the runtime."""
from __future__ import annotations

import pytest

from sandboxd.core.egress import ALL_TRAFFIC, MAX_ENTRIES, EgressPolicy, e2b_wire, parse
from sandboxd.errors import Invalid
from sandboxd.runtime.base import Egress


def test_entries_are_kept_in_a_canonical_form_and_deduplicated():
    p = parse({"allowOut": [" 8.8.8.8 ", "10.1.2.3/8", "8.8.8.8", "1.1.1.0/24"], "denyOut": ["0.0.0.0/0"]},
              camel=True)
    assert p.allow_out == ("8.8.8.8", "10.0.0.0/8", "1.1.1.0/24") and p.deny_out == (ALL_TRAFFIC,)
    assert p.runtime() == Egress(allow=("8.8.8.8/32", "10.0.0.0/8", "1.1.1.0/24"), deny=("0.0.0.0/0",))


def test_snake_and_camel_case_name_the_same_fields():
    body = {"allow_out": ["1.2.3.4"], "deny_out": ["5.6.7.0/24"], "dns_servers": ["9.9.9.9"]}
    assert parse(body, camel=False) == EgressPolicy(("1.2.3.4",), ("5.6.7.0/24",), ("9.9.9.9",))
    assert parse(body, camel=True) == EgressPolicy()  # the E2B shape does not read snake_case keys


def test_allow_internet_access_false_denies_all_traffic_once():
    assert parse({"allow_internet_access": False}, camel=True).deny_out == (ALL_TRAFFIC,)
    assert parse({"allow_internet_access": False, "denyOut": ["0.0.0.0/0"]}, camel=True).deny_out == (ALL_TRAFFIC,)
    assert parse({"allow_internet_access": True}, camel=True).empty


def test_host_names_go_to_the_proxy_and_addresses_to_nft():
    p = parse({"allowOut": ["API.example.com.", "*.Example.org", "1.2.3.4"], "denyOut": ["0.0.0.0/0", "evil.test"]},
              camel=True)
    assert p.allow_out == ("api.example.com", "*.example.org", "1.2.3.4")
    assert p.runtime() == Egress(allow=("1.2.3.4/32",), deny=(ALL_TRAFFIC,),
                                 allow_names=("api.example.com", "*.example.org"), deny_names=("evil.test",))
    assert p.runtime().by_name and not parse({"denyOut": ["1.2.3.4"]}, camel=True).runtime().by_name


def test_header_rules_merge_in_order_and_round_trip():
    body = {"rules": {"API.example.com": [{"transform": {"headers": {"X-A": "1", "X-B": "2"}}},
                                          {"transform": {"headers": {"x-a": "3"}}}, {}]}}
    p = parse(body, camel=True)
    assert p.rules == (("api.example.com", (("x-a", "3"), ("X-B", "2"))),) and not p.empty
    assert p.runtime().headers == p.rules and p.runtime().by_name
    assert EgressPolicy.from_dict(p.to_dict()) == p
    assert e2b_wire(p, True)["rules"] == {"api.example.com": [{"transform": {"headers": {"x-a": "3", "X-B": "2"}}}]}


@pytest.mark.parametrize("rules, entry", [
    ({"1.2.3.4": [{"transform": {"headers": {"A": "b"}}}]}, "1.2.3.4"),  # by host name only
    ({"a.example.com": [{"transform": {"headers": {"A b": "c"}}}]}, "a.example.com"),  # not a header name
    ({"a.example.com": [{"transform": {"headers": {"A": "b\r\nEvil: 1"}}}]}, "a.example.com"),  # no smuggling
    ({"a.example.com": [{"transform": {"body": "x"}}]}, "a.example.com"),  # headers are what a rule sets
    ({"a.example.com": {"transform": {}}}, "a.example.com"),
])
def test_a_bad_header_rule_is_refused_by_host(rules, entry):
    with pytest.raises(Invalid) as err:
        parse({"rules": rules}, camel=True)
    assert err.value.code == "invalid_network_rule" and err.value.details["entry"] == entry


@pytest.mark.parametrize("body, code, entry", [
    ({"denyOut": ["300.1.1.1"]}, "invalid_network_rule", "300.1.1.1"),
    ({"allowOut": ["::/0"]}, "invalid_network_rule", "::/0"),
    ({"allowOut": [""]}, "invalid_network_rule", ""),
    ({"allowOut": ["*"]}, "invalid_network_rule", "*"),
    ({"allowOut": [None]}, "invalid_network_rule", None),
    ({"dnsServers": ["1.1.1.1", "x"]}, "invalid_network_rule", "x"),
])
def test_a_bad_entry_is_refused_by_name(body, code, entry):
    with pytest.raises(Invalid) as err:
        parse(body, camel=True)
    assert err.value.code == code and err.value.details["entry"] == entry
    assert repr(entry) in err.value.message


def test_proxies_and_oversized_lists_are_refused():
    assert parse({"rules": {}}, camel=True).empty
    with pytest.raises(Invalid):
        parse({"denyOut": [f"192.0.2.{i % 250}/32" for i in range(MAX_ENTRIES + 1)]}, camel=True)
    with pytest.raises(Invalid):
        parse({"allow_internet_access": "no"}, camel=True)


def test_stored_form_and_e2b_wire_round_trip():
    p = EgressPolicy(("1.2.3.4",), (ALL_TRAFFIC,), None)
    assert EgressPolicy.from_dict(p.to_dict()) == p and EgressPolicy.from_dict(None) == EgressPolicy()
    assert e2b_wire(p, True) == {"allowOut": ["1.2.3.4"], "denyOut": [ALL_TRAFFIC], "allowPublicTraffic": True}
    assert e2b_wire(EgressPolicy(dns_servers=()), False)["dnsServers"] == []


def test_an_egress_proxy_is_kept_whole_and_shown_without_its_secrets():
    p = parse({"egressProxy": {"address": "Proxy.Example.test:1080", "username": "u", "password": "p",
                               "tls": {"serverName": "socks.example.test"}}}, camel=True)
    assert not p.empty and p.runtime().by_name and p.runtime().tunnel is not None
    assert p.runtime().tunnel.host == "proxy.example.test" and p.runtime().tunnel.password == "p"
    assert EgressPolicy.from_dict(p.to_dict()) == p  # stored whole: a restart needs the password again
    assert p.shown()["egress_proxy"] == {"address": "proxy.example.test:1080", "username": "u",
                                         "tls": {"server_name": "socks.example.test"}}
    assert e2b_wire(p, True)["egressProxy"] == {"address": "proxy.example.test:1080", "username": "u",
                                                "tls": {"serverName": "socks.example.test"}}
    plain = parse({"egress_proxy": {"address": "198.51.100.7:1080", "tls": True}}, camel=False)
    assert plain.shown()["egress_proxy"] == {"address": "198.51.100.7:1080", "tls": True}


@pytest.mark.parametrize("proxy, says", [
    ("p.example.test:1080", "must be an object"),
    ({"address": "p.example.test"}, "is not host:port"),
    ({"address": "p.example.test:0"}, "is not host:port"),
    ({"address": "bad host!:1080"}, "is not an IPv4 address or a host name"),
    ({"address": "p.example.test:1080", "password": "x"}, "needs a username"),
    ({"address": "p.example.test:1080", "username": "u" * 256}, "1 to 255 bytes"),
    ({"address": "p.example.test:1080", "tls": {"caCert": "not a certificate"}}, "no certificate"),
    ({"address": "p.example.test:1080", "tls": {"enabled": True}}, "tls takes"),
    ({"address": "p.example.test:1080", "tls": "yes"}, "tls must be"),
    ({"address": "p.example.test:1080", "via": "x"}, "takes address"),
])
def test_a_bad_egress_proxy_is_a_400(proxy, says):
    with pytest.raises(Invalid) as err:
        parse({"egressProxy": proxy}, camel=True)
    assert err.value.code == "invalid_network_rule" and says in err.value.message
