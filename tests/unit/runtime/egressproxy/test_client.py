"""The backend's handle on the egress proxy process (runtime/egressproxy/client.py): a real process, started
on first use, given the rules, asked for counters, and started again on the same ports when it dies."""
from __future__ import annotations

import time

import dns.message
import dns.query
import dns.rcode

from sandboxd.runtime.egressproxy.client import EgressProxy
from sandboxd.runtime.egressproxy.rules import HostRules

RULES = HostRules(deny_cidrs=("0.0.0.0/0",), allow_names=("allowed.test",))


def refused_dns(proxy: EgressProxy, port: int, name: str) -> list[dict]:
    """Ask the proxy's resolver for name from 127.0.0.1 (a sandbox here) and return its refusals after."""
    answer = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=3)
    assert answer.rcode() == dns.rcode.REFUSED
    return proxy.stats("127.0.0.1")["refused"]


def test_rules_reach_the_process_and_survive_its_death():
    proxy = EgressProxy(["127.0.0.1:9"])  # never asked: only refused names are queried here
    try:
        dns_port, tcp_port = proxy.put("127.0.0.1", RULES)
        assert [r["destination"] for r in refused_dns(proxy, dns_port, "other.test")] == ["other.test"]
        first = proxy._proc
        assert first is not None
        first.kill()
        for _ in range(100):  # the watcher starts it again, on the ports the nft rules name
            if proxy._proc is not first and proxy._proc is not None:
                break
            time.sleep(0.05)
        assert proxy._proc is not first and proxy.ports() == (dns_port, tcp_port)
        # The new process knows the sandbox: its refusal is counted for it (an unknown one's is not).
        assert [r["destination"] for r in refused_dns(proxy, dns_port, "again.test")] == ["again.test"]
        proxy.drop("127.0.0.1")
        assert proxy.stats("127.0.0.1") == {"destinations": {}, "refused": []}
    finally:
        proxy.close()
    assert proxy._proc is None


def test_close_is_final_and_stats_of_an_unknown_sandbox_start_nothing():
    proxy = EgressProxy([])
    assert proxy.stats("10.213.0.6") == {"destinations": {}, "refused": []} and proxy._proc is None
    proxy.ports()
    proc = proxy._proc
    proxy.close()
    assert proc is not None and proc.poll() is not None
    time.sleep(0.2)
    assert proxy._proc is None  # the watcher saw a close, not a crash
