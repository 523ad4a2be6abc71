"""A sandbox's egress policy (docs/network.md): what its owner allows and denies on top of the operator's floor.

E2B's model: `allow_out` and `deny_out` name IPv4 addresses, CIDRs (`0.0.0.0/0` is all traffic) and host
names (`example.com`, `*.example.com`; E2B's own server takes names in allow only, its SDK in both); an
allowed destination goes out even when a deny entry covers it, and with nothing denied everything the floor
lets through goes out. `rules` set headers on the plain-HTTP requests to a host (E2B's
`rules[host][].transform.headers`). A policy is replaced whole, never merged. The floor stays under it: no
entry opens what the operator closed.

`egress_proxy` (E2B's `egressProxy`, core/tunnel.py) names a SOCKS5 proxy the sandbox's TCP goes out
through, after the rules.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from sandboxd.core import tunnel as tunnels
from sandboxd.core.tunnel import TunnelSetting
from sandboxd.errors import Invalid
from sandboxd.runtime.base import Egress
from sandboxd.runtime.egressproxy.headers import NOT_SETTABLE

ALL_TRAFFIC = "0.0.0.0/0"
MAX_ENTRIES = 512  # per list
MAX_DNS_SERVERS = 10
MAX_RULE_HOSTS = 64
MAX_HEADERS = 32  # per host
MAX_HEADER_BYTES = 8192  # per host, names and values
TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110 token)
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
HOSTNAME = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})+$")


Headers = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]  # (host, ((name, value), ...)), ...


@dataclass(frozen=True)
class EgressPolicy:
    allow_out: tuple[str, ...] = ()
    deny_out: tuple[str, ...] = ()
    dns_servers: tuple[str, ...] | None = None  # E2B's: kept and shown; our resolver answers instead
    rules: Headers = ()
    tunnel: TunnelSetting | None = None

    @property
    def empty(self) -> bool:
        return not self.allow_out and not self.deny_out and not self.rules and self.tunnel is None

    def runtime(self) -> Egress:
        """The rules the runtime enforces: addresses for nft, names and headers for the egress proxy."""
        def split(entries: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
            names = tuple(e for e in entries if not _is_address(e))
            return tuple(_cidr(e) for e in entries if e not in names), names

        (allow, allow_names), (deny, deny_names) = split(self.allow_out), split(self.deny_out)
        return Egress(allow=allow, deny=deny, allow_names=allow_names, deny_names=deny_names, headers=self.rules,
                      tunnel=self.tunnel.runtime() if self.tunnel else None)

    def to_dict(self) -> dict[str, Any]:
        """The stored form, secrets included: never answered as it is (shown())."""
        out = self.shown()
        if self.tunnel is not None:
            out["egress_proxy"] = self.tunnel.stored()
        return out

    def shown(self) -> dict[str, Any]:
        """What the HopX routes and the events say of it: the egress proxy without its password or CA."""
        out: dict[str, Any] = {"allow_out": list(self.allow_out), "deny_out": list(self.deny_out),
                               "dns_servers": None if self.dns_servers is None else list(self.dns_servers)}
        if self.rules:
            out["rules"] = wire_rules(self.rules)
        if self.tunnel is not None:
            out["egress_proxy"] = self.tunnel.shown(camel=False)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "EgressPolicy":
        d = d or {}
        dns = d.get("dns_servers")
        rules = tuple((host, tuple((k, v) for r in rs for k, v in r["transform"]["headers"].items()))
                      for host, rs in (d.get("rules") or {}).items())
        return cls(tuple(d.get("allow_out") or ()), tuple(d.get("deny_out") or ()),
                   None if dns is None else tuple(dns), rules, TunnelSetting.from_stored(d.get("egress_proxy")))


def wire_rules(rules: Headers) -> dict[str, list[dict[str, Any]]]:
    """E2B's shape: host → [{"transform": {"headers": {...}}}]."""
    return {host: [{"transform": {"headers": dict(headers)}}] for host, headers in rules}


def _is_address(entry: str) -> bool:
    try:
        ipaddress.IPv4Network(entry)
        return True
    except ValueError:
        return False


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
    name = _hostname(text)
    if name is None:
        raise Invalid(f"{field}: {raw!r} is not an IP address, a CIDR or a host name", code="invalid_network_rule",
                      details={"field": field, "entry": raw})
    return name


def _hostname(text: str) -> str | None:
    """The name lowercased, or None when it is not one (a last label of digits is a mistyped address)."""
    name = text.lower().rstrip(".")
    ok = HOSTNAME.match(name) and len(name) <= 253 and not name.rsplit(".", 1)[-1].isdigit()
    return name if ok else None


def _rules(field: str, raw: Any) -> Headers:
    """E2B's `rules`: host → [{"transform": {"headers": {name: value}}}], the headers merged in order."""
    if raw is None:
        return ()
    if not isinstance(raw, dict) or len(raw) > MAX_RULE_HOSTS:
        raise Invalid(f"{field} must map at most {MAX_RULE_HOSTS} host names to lists of rules",
                      code="invalid_network_rule", details={"field": field})
    out = []
    for host, rules in raw.items():
        name = _hostname(host) if isinstance(host, str) else None
        if name is None:
            raise Invalid(f"{field}: {host!r} is not a host name; header rules apply to requests by host name",
                          code="invalid_network_rule", details={"field": field, "entry": host})
        if not isinstance(rules, list):
            raise Invalid(f"{field}.{host}: must be a list of rules", code="invalid_network_rule",
                          details={"field": field, "entry": host})
        headers: dict[str, tuple[str, str]] = {}
        for rule in rules:
            transform = rule.get("transform") if isinstance(rule, dict) else None
            given = (transform or {}).get("headers") if isinstance(transform, dict) else None
            if not isinstance(rule, dict) or set(rule) - {"transform"} or not isinstance(transform or {}, dict) \
                    or set(transform or {}) - {"headers"} or not isinstance(given or {}, dict):
                raise Invalid(f"{field}.{host}: a rule is {{\"transform\": {{\"headers\": {{name: value}}}}}}",
                              code="invalid_network_rule", details={"field": field, "entry": host})
            for k, v in (given or {}).items():
                if not isinstance(k, str) or not TOKEN.match(k) or not isinstance(v, str) \
                        or any(c in v for c in "\r\n\0"):
                    raise Invalid(f"{field}.{host}: {k!r} is not a header name with a one-line value",
                                  code="invalid_network_rule", details={"field": field, "entry": host, "header": k})
                if k.lower() in NOT_SETTABLE:
                    raise Invalid(f"{field}.{host}: {k!r} frames or routes the request; a rule cannot set it",
                                  code="invalid_network_rule", details={"field": field, "entry": host, "header": k})
                headers[k.lower()] = (k, v)
        if len(headers) > MAX_HEADERS or sum(len(k) + len(v) for k, v in headers.values()) > MAX_HEADER_BYTES:
            raise Invalid(f"{field}.{host}: at most {MAX_HEADERS} headers and {MAX_HEADER_BYTES} bytes",
                          code="invalid_network_rule", details={"field": field, "entry": host})
        if headers:
            out.append((name, tuple(headers.values())))
    return tuple(out)


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

    allow = _entries(key("allow_out"), body.get(key("allow_out")))
    deny = _entries(key("deny_out"), body.get(key("deny_out")))
    internet = body.get("allow_internet_access")
    if internet is not None and not isinstance(internet, bool):
        raise Invalid("allow_internet_access must be a boolean", code="invalid_network_rule",
                      details={"field": "allow_internet_access"})
    if internet is False and ALL_TRAFFIC not in deny:
        deny += (ALL_TRAFFIC,)
    return EgressPolicy(allow, deny, _dns(key("dns_servers"), body.get(key("dns_servers"))),
                        _rules(key("rules"), body.get(key("rules"))),
                        tunnels.parse(key("egress_proxy"), body.get(key("egress_proxy")), camel=camel))


def e2b_wire(policy: EgressPolicy, public_traffic: bool) -> dict[str, Any]:
    """E2B's `SandboxNetworkConfig` as GET /sandboxes/{id} answers it."""
    out: dict[str, Any] = {"allowOut": list(policy.allow_out), "denyOut": list(policy.deny_out),
                           "allowPublicTraffic": public_traffic}
    if policy.dns_servers is not None:
        out["dnsServers"] = list(policy.dns_servers)
    if policy.rules:
        out["rules"] = wire_rules(policy.rules)
    if policy.tunnel is not None:
        out["egressProxy"] = policy.tunnel.shown(camel=True)
    return out
