"""A sandbox's egress policy (docs/network.md): what its owner allows and denies on top of the operator's floor.

E2B's model: `allow_out` and `deny_out` name IPv4 addresses, CIDRs (`0.0.0.0/0` is all traffic) and, for
allow only, host names (`example.com`, `*.example.com`); an allowed destination goes out even when a deny
entry covers it, and with nothing denied everything the floor lets through goes out. A policy is replaced
whole, never merged. The floor stays under it: no entry opens what the operator closed.

Host names and per-host header rules are taken into the model but refused until they are enforced: a rule
that would be stored and not applied is refused, never accepted silently.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from sandboxd.errors import Invalid
from sandboxd.runtime.base import Egress

ALL_TRAFFIC = "0.0.0.0/0"
MAX_ENTRIES = 512  # per list
MAX_DNS_SERVERS = 10
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
HOSTNAME = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})+$")


@dataclass(frozen=True)
class EgressPolicy:
    allow_out: tuple[str, ...] = ()
    deny_out: tuple[str, ...] = ()
    dns_servers: tuple[str, ...] | None = None  # E2B's: opened with a domain in allow_out; None: its default

    @property
    def empty(self) -> bool:
        return not self.allow_out and not self.deny_out

    def runtime(self) -> Egress:
        """The rules the runtime enforces: CIDRs only (host names are refused before a policy is made)."""
        return Egress(allow=tuple(_cidr(e) for e in self.allow_out), deny=tuple(_cidr(e) for e in self.deny_out))

    def to_dict(self) -> dict[str, Any]:
        return {"allow_out": list(self.allow_out), "deny_out": list(self.deny_out),
                "dns_servers": None if self.dns_servers is None else list(self.dns_servers)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "EgressPolicy":
        d = d or {}
        dns = d.get("dns_servers")
        return cls(tuple(d.get("allow_out") or ()), tuple(d.get("deny_out") or ()),
                   None if dns is None else tuple(dns))


def _cidr(entry: str) -> str:
    return str(ipaddress.IPv4Network(entry))


def _entry(field: str, raw: Any) -> str:
    """One allow/deny entry in its stored form: an IPv4 address as given, a CIDR as its network, a host name
    lowercased. Anything else is a 400 naming the entry."""
    if not isinstance(raw, str) or not raw.strip():
        raise Invalid(f"{field}: {raw!r} is not an IP address, a CIDR or a host name", code="invalid_network_rule",
                      details={"field": field, "entry": raw})
    text = raw.strip()
    try:
        if "/" in text:
            net = ipaddress.ip_network(text, strict=False)
        else:
            net = ipaddress.ip_network(ipaddress.ip_address(text))
            text = str(net.network_address)
        if net.version == 6:
            raise Invalid(f"{field}: {raw!r} is IPv6; sandboxes have IPv4 only", code="invalid_network_rule",
                          details={"field": field, "entry": raw})
        return str(net) if "/" in text else text
    except ValueError:
        pass
    name = text.lower().rstrip(".")
    if not HOSTNAME.match(name) or len(name) > 253:
        raise Invalid(f"{field}: {raw!r} is not an IP address, a CIDR or a host name", code="invalid_network_rule",
                      details={"field": field, "entry": raw})
    if field.startswith("deny"):
        raise Invalid(f"{field}: {raw!r} is a host name; deny rules take IP addresses and CIDRs only",
                      code="invalid_network_rule", details={"field": field, "entry": raw})
    raise Invalid(f"{field}: {raw!r} is a host name; domain rules are not enforced yet, name its IP addresses "
                  "or CIDRs instead", code="domain_rules_not_enforced", details={"field": field, "entry": raw})


def _entries(field: str, raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise Invalid(f"{field} must be a list of strings", code="invalid_network_rule", details={"field": field})
    if len(raw) > MAX_ENTRIES:
        raise Invalid(f"{field} has {len(raw)} entries; at most {MAX_ENTRIES}", code="invalid_network_rule",
                      details={"field": field, "limit": MAX_ENTRIES})
    return tuple(dict.fromkeys(_entry(field, e) for e in raw))


def _dns(field: str, raw: Any) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) > MAX_DNS_SERVERS:
        raise Invalid(f"{field} must be a list of at most {MAX_DNS_SERVERS} IPv4 addresses",
                      code="invalid_network_rule", details={"field": field})
    out = []
    for e in raw:
        try:
            out.append(str(ipaddress.IPv4Address(e)))
        except (ValueError, TypeError):
            raise Invalid(f"{field}: {e!r} is not an IPv4 address", code="invalid_network_rule",
                          details={"field": field, "entry": e}) from None
    return tuple(out)


def parse(body: dict[str, Any], *, camel: bool) -> EgressPolicy:
    """The policy a create's `network` or a PUT .../network body names, in E2B's camelCase or snake_case.
    `allow_internet_access: false` is E2B's shorthand for denying 0.0.0.0/0."""
    def key(snake: str) -> str:
        head, *rest = snake.split("_")
        return head + "".join(w.title() for w in rest) if camel and snake != "allow_internet_access" else snake

    if body.get(key("rules")):
        raise Invalid(f"{key('rules')}: per-host header rules are not enforced yet", code="network_rules_not_enforced",
                      details={"field": key("rules")})
    if body.get(key("egress_proxy")) is not None:
        raise Invalid(f"{key('egress_proxy')}: egress proxies are not supported", code="egress_proxy_not_supported",
                      details={"field": key("egress_proxy")})
    allow = _entries(key("allow_out"), body.get(key("allow_out")))
    deny = _entries(key("deny_out"), body.get(key("deny_out")))
    internet = body.get("allow_internet_access")
    if internet is not None and not isinstance(internet, bool):
        raise Invalid("allow_internet_access must be a boolean", code="invalid_network_rule",
                      details={"field": "allow_internet_access"})
    if internet is False and ALL_TRAFFIC not in deny:
        deny += (ALL_TRAFFIC,)
    return EgressPolicy(allow, deny, _dns(key("dns_servers"), body.get(key("dns_servers"))))


def e2b_wire(policy: EgressPolicy, public_traffic: bool) -> dict[str, Any]:
    """E2B's `SandboxNetworkConfig` as GET /sandboxes/{id} answers it."""
    out: dict[str, Any] = {"allowOut": list(policy.allow_out), "denyOut": list(policy.deny_out),
                           "allowPublicTraffic": public_traffic}
    if policy.dns_servers is not None:
        out["dnsServers"] = list(policy.dns_servers)
    return out
