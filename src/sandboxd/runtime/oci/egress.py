"""A sandbox's egress rules on the host (docs/network.md): nft for addresses, the egress proxy for names.

The nft rules are the whole story for a policy of addresses. A policy that names hosts (or sets headers)
also needs the proxy: it is told the sandbox's rules first, then nft sends the sandbox's DNS and the TCP no
allow entry lets through to it, so no packet meets the redirect before the proxy knows the sandbox.
"""
from __future__ import annotations

import time
from dataclasses import asdict

from sandboxd.runtime import network
from sandboxd.runtime.base import DestinationUsage, Egress, EgressDenied, Refusal
from sandboxd.runtime.egressproxy.client import EgressProxy
from sandboxd.runtime.egressproxy.rules import HostRules


def host_rules(egress: Egress) -> HostRules:
    return HostRules(egress.allow, egress.deny, egress.allow_names, egress.deny_names, egress.headers,
                     asdict(egress.tunnel) if egress.tunnel else None)


def apply(proxy: EgressProxy, egress: Egress | None, net: dict) -> None:
    """Write the rules into the kernel (and the proxy) for the sandbox's veth (none: no network to guard)."""
    veth, ip = net.get("veth"), net.get("sandbox_ip")
    if egress is None or not veth:
        return
    redirect = proxy.put(ip, host_rules(egress)) if egress.by_name and ip else None
    network.set_egress(veth, list(egress.allow), list(egress.deny), redirect, tunnel=egress.tunnel is not None)
    if redirect is None and ip:
        proxy.drop(ip)  # after nft stopped sending it traffic


def release(proxy: EgressProxy, net: dict) -> None:
    if net.get("sandbox_ip"):
        proxy.drop(net["sandbox_ip"])


def report(proxy: EgressProxy, net: dict) -> EgressDenied:
    veth, ip = net.get("veth"), net.get("sandbox_ip")
    if not veth:
        return EgressDenied()
    packets, size, where = network.egress_denied(veth)
    usage: dict[str, DestinationUsage] = {
        addr: DestinationUsage(addr, connections=c, bytes_sent=b) for addr, (c, b) in network.egress_usage(veth).items()}
    stats = proxy.stats(ip) if ip else {"destinations": {}, "refused": []}
    for dest, u in stats["destinations"].items():
        seen = usage.get(dest)
        usage[dest] = DestinationUsage(
            dest, connections=u["connections"] + (seen.connections if seen else 0),
            bytes_sent=u["bytes_sent"] + (seen.bytes_sent if seen else 0),
            bytes_received=u["bytes_received"] if seen is None else None, denied=u["denied"])
    refusals = tuple(Refusal(float(r["time"]), r["destination"], r["address"], int(r["port"]), r["reason"])
                     for r in stats["refused"])
    hour_ago = time.time() - network.DENIED_FOR
    listed = tuple(dict.fromkeys([*where, *(r.address for r in refusals if r.time > hour_ago and r.address)]))
    return EgressDenied(packets=packets, bytes=size, destinations=listed[:network.DENIED_LISTED],
                        refusals=refusals, usage=tuple(sorted(usage.values(), key=lambda u: u.destination)))
