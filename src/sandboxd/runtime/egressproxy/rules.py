"""What the egress proxy and its resolver apply to each sandbox (docs/network.md), and the decision for one
connection or one name.

A sandbox whose policy names hosts has its DNS and its TCP that an IP rule would refuse sent to the egress
proxy (nft `redirect`, runtime/network.py). There a connection is admitted by the name it carries (TLS SNI,
HTTP Host) only when its destination address is one that name really has: an address the sandbox was
answered for it through our resolver, or one the proxy finds for it itself. So neither a direct connection
to an address nor a forged SNI towards a denied address gets through a domain rule.

Answers are remembered per sandbox for at least PIN_FOR seconds whatever their TTL: a client connects after
it resolves, often well past a TTL of a few seconds.
"""
from __future__ import annotations

import ipaddress
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

ALL = ipaddress.IPv4Network("0.0.0.0/0")
PIN_FOR = 300.0  # seconds an answer stays bound to its name for its sandbox, at the least
MAX_NAMES = 4096  # names remembered per sandbox (oldest forgotten first)
DENIED_KEPT = 256  # refusals kept per sandbox


def matches(pattern: str, name: str) -> bool:
    """`example.com` is that name only; `*.example.com` is every name under it (not the name itself)."""
    name = name.lower().rstrip(".")
    if pattern.startswith("*."):
        return name.endswith(pattern[1:])
    return name == pattern


def _any(patterns: tuple[str, ...], name: str) -> bool:
    return any(matches(p, name) for p in patterns)


@dataclass(frozen=True)
class HostRules:
    """One sandbox's policy as the proxy applies it. `headers`: host pattern → headers set on plain-HTTP
    requests to it."""

    allow_cidrs: tuple[str, ...] = ()
    deny_cidrs: tuple[str, ...] = ()
    allow_names: tuple[str, ...] = ()
    deny_names: tuple[str, ...] = ()
    headers: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    tunnel: dict[str, Any] | None = None  # runtime.base.Tunnel's fields: admitted connections go through it

    def __post_init__(self) -> None:
        object.__setattr__(self, "_allow", tuple(ipaddress.IPv4Network(c) for c in self.allow_cidrs))
        object.__setattr__(self, "_deny", tuple(ipaddress.IPv4Network(c) for c in self.deny_cidrs))

    def ip_allowed(self, addr: ipaddress.IPv4Address) -> bool:
        return any(addr in n for n in self._allow)  # type: ignore[attr-defined]

    def ip_denied(self, addr: ipaddress.IPv4Address) -> bool:
        return any(addr in n for n in self._deny)  # type: ignore[attr-defined]

    @property
    def denies_all(self) -> bool:
        return ALL in self._deny  # type: ignore[attr-defined]

    def headers_for(self, name: str | None) -> tuple[tuple[str, str], ...]:
        """Headers to set on a request to name: every matching rule's, in order (a later one wins a name)."""
        if not name:
            return ()
        return tuple(h for pattern, hs in self.headers if matches(pattern, name) for h in hs)

    def to_dict(self) -> dict[str, Any]:
        return {"allow_cidrs": list(self.allow_cidrs), "deny_cidrs": list(self.deny_cidrs),
                "allow_names": list(self.allow_names), "deny_names": list(self.deny_names),
                "headers": [[p, [list(h) for h in hs]] for p, hs in self.headers], "tunnel": self.tunnel}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HostRules":
        return cls(tuple(d.get("allow_cidrs", ())), tuple(d.get("deny_cidrs", ())), tuple(d.get("allow_names", ())),
                   tuple(d.get("deny_names", ())),
                   tuple((p, tuple((k, v) for k, v in hs)) for p, hs in d.get("headers", ())), d.get("tunnel"))


@dataclass(frozen=True)
class Verdict:
    allow: bool
    reason: str  # ip_allowed, name_allowed, not_denied | ip_denied, name_denied, name_not_resolved, tls_interception_off
    # (the proxy adds its own refusals: busy, floor, connect_failed, tunnel_failed)
    destination: str  # what it is counted under: the name when one was given, else the address


@dataclass
class Usage:
    connections: int = 0
    bytes_sent: int = 0  # sandbox → destination
    bytes_received: int = 0
    denied: int = 0
    last: float = 0.0


@dataclass
class _Sandbox:
    rules: HostRules
    answers: dict[str, dict[str, float]] = field(default_factory=dict)  # name → address → until
    usage: dict[str, Usage] = field(default_factory=dict)
    refused: deque = field(default_factory=lambda: deque(maxlen=DENIED_KEPT))


class Table:
    """Every sandbox the proxy serves, by its address on its veth."""

    def __init__(self) -> None:
        self._boxes: dict[str, _Sandbox] = {}

    def put(self, sandbox_ip: str, rules: HostRules) -> None:
        """Set (or replace) a sandbox's rules; what it resolved and its counters are kept."""
        box = self._boxes.get(sandbox_ip)
        if box is None:
            self._boxes[sandbox_ip] = _Sandbox(rules)
        else:
            box.rules = rules

    def drop(self, sandbox_ip: str) -> None:
        self._boxes.pop(sandbox_ip, None)

    def rules(self, sandbox_ip: str) -> HostRules | None:
        box = self._boxes.get(sandbox_ip)
        return box.rules if box else None

    # -- names ---------------------------------------------------------------------------------------
    def may_resolve(self, sandbox_ip: str, name: str) -> bool:
        """Whether our resolver answers the sandbox for name: never for a denied name; under deny-all only for
        allowed names (so a sandbox allowed nothing by name cannot send data out in DNS queries)."""
        rules = self.rules(sandbox_ip)
        if rules is None:
            return False
        if _any(rules.allow_names, name):
            return True
        if _any(rules.deny_names, name):
            return False
        return not rules.denies_all

    def record(self, sandbox_ip: str, name: str, addresses: list[str], ttl: float) -> None:
        """Remember that name resolved to these IPv4 addresses for the sandbox."""
        box = self._boxes.get(sandbox_ip)
        if box is None or not addresses:
            return
        name = name.lower().rstrip(".")
        until = time.monotonic() + max(ttl, PIN_FOR)
        bound = box.answers.pop(name, {})  # re-inserted last: the dict's order is the age order
        bound.update({a: until for a in addresses})
        box.answers[name] = bound
        while len(box.answers) > MAX_NAMES:
            box.answers.pop(next(iter(box.answers)))

    def resolved(self, sandbox_ip: str, name: str) -> set[str]:
        box = self._boxes.get(sandbox_ip)
        if box is None:
            return set()
        now = time.monotonic()
        return {a for a, until in box.answers.get(name.lower().rstrip("."), {}).items() if until > now}

    def _names_of(self, box: _Sandbox, addr: str) -> list[str]:
        now = time.monotonic()
        return [n for n, bound in box.answers.items() if bound.get(addr, 0) > now]

    # -- decisions -----------------------------------------------------------------------------------
    def decide(self, sandbox_ip: str, dst: str, name: str | None, tls: bool) -> Verdict:
        """Whether the sandbox may open a TCP connection to dst carrying name (None: it carried none)."""
        box = self._boxes.get(sandbox_ip)
        if box is None:
            return Verdict(False, "unknown_sandbox", dst)
        rules, addr = box.rules, ipaddress.IPv4Address(dst)
        label = name.lower().rstrip(".") if name else dst
        if rules.ip_allowed(addr):
            return Verdict(True, "ip_allowed", label)
        if name:
            if _any(rules.allow_names, label):
                if dst not in self.resolved(sandbox_ip, label):
                    return Verdict(False, "name_not_resolved", label)
                if tls and rules.headers_for(label):
                    return Verdict(False, "tls_interception_off", label)
                return Verdict(True, "name_allowed", label)
            if _any(rules.deny_names, label):
                return Verdict(False, "name_denied", label)
        if any(_any(rules.deny_names, n) for n in self._names_of(box, dst)):
            return Verdict(False, "name_denied", label)
        if rules.ip_denied(addr):
            return Verdict(False, "ip_denied", label)
        if name and tls and rules.headers_for(label):
            return Verdict(False, "tls_interception_off", label)
        return Verdict(True, "not_denied", label)

    # -- counters ------------------------------------------------------------------------------------
    def count(self, sandbox_ip: str, destination: str, connections: int = 0, sent: int = 0,
              received: int = 0) -> None:
        box = self._boxes.get(sandbox_ip)
        if box is None:
            return
        u = box.usage.setdefault(destination, Usage())
        u.connections += connections
        u.bytes_sent += sent
        u.bytes_received += received
        u.last = time.time()

    def refuse(self, sandbox_ip: str, destination: str, address: str, port: int, reason: str) -> None:
        """Count a refusal and keep it in the sandbox's recent list (what its code tried)."""
        box = self._boxes.get(sandbox_ip)
        if box is None:
            return
        destination = destination.lower().rstrip(".")
        box.usage.setdefault(destination, Usage()).denied += 1
        box.refused.append({"time": time.time(), "destination": destination, "address": address, "port": port,
                            "reason": reason})

    def stats(self, sandbox_ip: str) -> dict[str, Any]:
        box = self._boxes.get(sandbox_ip)
        if box is None:
            return {"destinations": {}, "refused": []}
        return {"destinations": {d: vars(u).copy() for d, u in box.usage.items()}, "refused": list(box.refused)}
