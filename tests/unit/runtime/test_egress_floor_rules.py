"""The egress floor's pure parts: which ranges it closes, what an operator may open, the resolvers it keeps."""
from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from sandboxd.config import Settings
from sandboxd.runtime import network

CLOSED = [ipaddress.ip_network(c) for c in network.CLOSED_RANGES]


def closed(addr: ipaddress.IPv4Address) -> bool:
    return any(addr in net for net in CLOSED)


def test_every_non_public_ipv4_address_is_closed():
    # The first and last address of every /16 (the smaller ranges are named below): whatever Python's
    # IANA tables call not global is closed.
    for block in range(1 << 16):
        for addr in (ipaddress.IPv4Address(block << 16), ipaddress.IPv4Address((block << 16) | 0xFFFF)):
            if not addr.is_global:
                assert closed(addr), addr


@pytest.mark.parametrize("cidr", ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
                                  "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16",
                                  "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4",
                                  "240.0.0.0/4"])
def test_named_ranges_are_closed(cidr):
    assert any(ipaddress.ip_network(cidr).subnet_of(net) for net in CLOSED)


def test_public_addresses_stay_open():
    for addr in ("1.1.1.1", "8.8.8.8", "100.63.255.255", "100.128.0.0", "172.32.0.1", "192.169.0.1", "223.255.255.254"):
        assert not closed(ipaddress.IPv4Address(addr)), addr


def test_operator_cidrs_are_merged_and_normalised():
    assert Settings(egress_allow_cidrs="").egress_allow_cidrs == ""
    s = Settings(egress_allow_cidrs=" 10.1.0.0/16, 10.1.2.0/24,,192.168.5.7 ")
    assert s.egress_allow_cidrs == "10.1.0.0/16,192.168.5.7/32"
    assert network.parse_cidrs(s.egress_allow_cidrs) == [ipaddress.ip_network("10.1.0.0/16"),
                                                         ipaddress.ip_network("192.168.5.7/32")]


@pytest.mark.parametrize("bad, says", [("10.1.2.3/24", "host bits"), ("fc00::/7", "no IPv6 egress"),
                                       ("10.0.0.0/33", "CIDR form"), ("lan", "CIDR form")])
def test_a_bad_opening_stops_the_start_naming_the_entry(bad, says):
    with pytest.raises(ValidationError) as err:
        Settings(egress_allow_cidrs=f"10.9.0.0/16,{bad}")
    assert "egress_allow_cidrs" in str(err.value) and repr(bad) in str(err.value) and says in str(err.value)


def test_resolvers_are_the_hosts_ipv4_non_loopback_ones(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch lan\nnameserver 127.0.0.53\nnameserver 192.168.1.1\nnameserver fd00::1\n"
                    "nameserver 10.0.0.2 # vpc\nnameserver 192.168.1.1\nnameserver\nnameserver not-an-ip\n")
    assert network.host_resolvers(conf) == ["192.168.1.1", "10.0.0.2"]
    assert network.host_resolvers(tmp_path / "missing") == []


def test_a_host_on_a_local_stub_gives_sandboxes_the_stubs_upstream_and_never_a_resolver_of_our_choosing(tmp_path):
    stub, upstream = tmp_path / "resolv.conf", tmp_path / "upstream.conf"
    stub.write_text("nameserver 127.0.0.53\noptions edns0\n")
    assert network.sandbox_resolvers(stub, upstream) == []  # no upstream list: no resolver at all
    upstream.write_text("nameserver 10.1.2.3\n")
    assert network.sandbox_resolvers(stub, upstream) == ["10.1.2.3"]
    stub.write_text("nameserver 192.168.7.1\n")
    assert network.sandbox_resolvers(stub, upstream) == ["192.168.7.1"]  # the host's own list wins


def test_floor_script_sets_exactly_the_given_elements():
    script = network.floor_script(network.parse_cidrs("10.1.0.0/16"), ["192.168.1.1"])
    assert script.splitlines() == [
        "flush set inet sandboxd opened", "add element inet sandboxd opened { 10.1.0.0/16 }",
        "flush set inet sandboxd resolvers", "add element inet sandboxd resolvers { 192.168.1.1 }"]
    assert network.floor_script([], []).splitlines() == ["flush set inet sandboxd opened",
                                                         "flush set inet sandboxd resolvers"]


def test_a_sandboxs_egress_rules_are_one_transaction_that_keeps_its_counter():
    script = network.egress_script("vhabc", ["192.0.2.7/32"], ["0.0.0.0/0"])
    lines = script.splitlines()
    assert lines.index("flush chain inet sandboxd e_vhabc") < lines.index(
        "add element inet sandboxd ea_vhabc { 192.0.2.7/32 }")
    assert "delete counter" not in script and "reset" not in script
    record, reject, connections, sent = [line for line in lines if line.startswith("add rule inet sandboxd e_vhabc")]
    # An allow entry wins: what it holds is never recorded or rejected.
    assert "ip daddr @ed_vhabc ip daddr != @ea_vhabc" in record and "ip daddr != @ea_vhabc" in reject
    assert "update @et_vhabc" in record and "reject" not in record  # a full list never skips the reject
    assert "counter name ec_vhabc reject" in reject
    # What passes is counted per destination, each update in a rule of its own, after the reject.
    assert "ct state new update @en_vhabc" in connections and "accept" not in connections
    assert sent.endswith("update @eb_vhabc { ip daddr }")
    assert 'add element inet sandboxd egress { "vhabc" : jump e_vhabc }' in lines
    # Without names nothing is redirected: the sandbox's nat element goes (made first, so the delete finds it).
    assert lines[-1] == 'delete element inet sandboxd egress_nat { "vhabc" }'
    assert not [line for line in lines if line.startswith("add rule inet sandboxd n_vhabc")]


def test_a_policy_with_names_redirects_dns_and_unsettled_tcp_to_the_proxy():
    lines = network.egress_script("vhabc", ["192.0.2.7/32"], ["0.0.0.0/0"], (5353, 8080)).splitlines()
    nat = [line.removeprefix("add rule inet sandboxd n_vhabc ") for line in lines
           if line.startswith("add rule inet sandboxd n_vhabc")]
    to = "ct mark set 0x5bd1 redirect to"  # the mark the input chain lets in, and nothing else from a sandbox
    assert nat == [f"meta l4proto {{ tcp, udp }} th dport 53 {to} :5353",  # every DNS server is ours
                   "ip daddr @ea_vhabc return",  # allowed by address: straight out
                   f"ip daddr @opened meta l4proto tcp {to} :8080",
                   "ip daddr @closed return",  # the floor refuses it at once, as without names
                   f"meta l4proto tcp {to} :8080"]
    assert 'iifname "vh*" ct mark 0x5bd1 accept' in network.BASE_RULESET
    assert lines[-1] == 'add element inet sandboxd egress_nat { "vhabc" : jump n_vhabc }'
    assert "add element inet sandboxd ed_vhabc" not in network.egress_script("vhabc", [], [])


def test_a_tunnelled_sandbox_sends_every_tcp_connection_the_floor_lets_through_to_the_proxy():
    """With an egress proxy even the allowed addresses go through it: the rules decide, the tunnel carries."""
    lines = network.egress_script("vhabc", ["192.0.2.7/32"], ["0.0.0.0/0"], (5353, 8080), tunnel=True).splitlines()
    nat = [line.removeprefix("add rule inet sandboxd n_vhabc ") for line in lines
           if line.startswith("add rule inet sandboxd n_vhabc")]
    assert "ip daddr @ea_vhabc return" not in nat
    assert nat[-3:] == ["ip daddr @opened meta l4proto tcp ct mark set 0x5bd1 redirect to :8080",
                        "ip daddr @closed return", "meta l4proto tcp ct mark set 0x5bd1 redirect to :8080"]
