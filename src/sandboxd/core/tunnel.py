"""E2B's `egressProxy` (docs/network.md): a SOCKS5 proxy of the sandbox owner's that its TCP goes out through,
after its allow and deny rules. Checked here, kept whole with the policy (it is needed again after a restart),
and shown without its password and CA certificate, which the API never answers.
"""
from __future__ import annotations

import ipaddress
import re
import ssl
from dataclasses import asdict, dataclass
from typing import Any

from sandboxd.errors import Invalid
from sandboxd.runtime.base import Tunnel

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
HOSTNAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
MAX_CREDENTIAL = 255  # bytes, RFC 1929
MAX_CA = 8192


@dataclass(frozen=True)
class TunnelSetting:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    server_name: str | None = None
    ca_cert: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def runtime(self) -> Tunnel:
        return Tunnel(**asdict(self))

    def stored(self) -> dict[str, Any]:
        return asdict(self)

    def shown(self, camel: bool) -> dict[str, Any]:
        """What the API answers: no password, no CA certificate."""
        out: dict[str, Any] = {"address": self.address}
        if self.username is not None:
            out["username"] = self.username
        if self.tls:
            tls = {} if self.server_name is None else {"serverName" if camel else "server_name": self.server_name}
            out["tls"] = tls if camel else (tls or True)
        return out

    @classmethod
    def from_stored(cls, d: dict[str, Any] | None) -> "TunnelSetting | None":
        return cls(**d) if d else None


def _bad(field: str, why: str) -> Invalid:
    return Invalid(f"{field}: {why}", code="invalid_network_rule", details={"field": field})


def parse(field: str, raw: Any, *, camel: bool) -> TunnelSetting | None:
    """`{address: "host:port", username?, password?, tls?: true | {serverName?, caCert?}}` (snake_case keys on
    the HopX routes)."""
    if raw is None:
        return None
    server_key, ca_key = ("serverName", "caCert") if camel else ("server_name", "ca_cert")
    if not isinstance(raw, dict):
        raise _bad(field, "must be an object: {address, username, password, tls}")
    if set(raw) - {"address", "username", "password", "tls"}:
        raise _bad(field, "takes address, username, password and tls")
    host, sep, port = str(raw.get("address") or "").rpartition(":")
    host = host.lower()
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise _bad(field, f"address {raw.get('address')!r} is not host:port")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        if not HOSTNAME.match(host) or len(host) > 253 or host.rsplit(".", 1)[-1].isdigit():
            raise _bad(field, f"address {raw.get('address')!r}: {host!r} is not an IPv4 address or a host name") \
                from None
    user, password = raw.get("username"), raw.get("password")
    for name, value in (("username", user), ("password", password)):
        if value is not None and (not isinstance(value, str) or not value
                                  or len(value.encode()) > MAX_CREDENTIAL):
            raise _bad(field, f"{name} must be a string of 1 to {MAX_CREDENTIAL} bytes")
    if password is not None and user is None:
        raise _bad(field, "a password needs a username")
    tls, server_name, ca = raw.get("tls"), None, None
    if isinstance(tls, dict):
        if set(tls) - {server_key, ca_key}:
            raise _bad(field, f"tls takes {server_key} and {ca_key}")
        server_name, ca = tls.get(server_key), tls.get(ca_key)
        if server_name is not None and (not isinstance(server_name, str) or not HOSTNAME.match(server_name.lower())
                                        or len(server_name) > 253):
            raise _bad(field, f"tls {server_key} must be a host name")
        if ca is not None:
            if not isinstance(ca, str) or len(ca) > MAX_CA:
                raise _bad(field, f"tls {ca_key} must be PEM certificates of at most {MAX_CA} bytes")
            try:
                ssl.create_default_context(cadata=ca)
            except (ssl.SSLError, ValueError):
                raise _bad(field, f"tls {ca_key} holds no certificate OpenSSL can read") from None
        tls = True
    elif tls is not None and not isinstance(tls, bool):
        raise _bad(field, "tls must be a boolean or an object")
    return TunnelSetting(host, int(port), user, password, bool(tls), server_name, ca)
