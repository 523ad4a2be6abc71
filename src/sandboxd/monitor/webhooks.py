"""Webhook registry (CRUD), URL validation and the E2B v1 signature.

A webhook is its team's (docs/teams.md): it receives only that team's sandboxes' events, and another team's
answers 404. `team` arguments are the caller's scope; None is the operator, who sees every team's.

Signature v1 (docs/monitoring.md): base64(SHA-256(secret + raw body)) with the `=` padding removed. It is a
plain hash, not an HMAC; we keep it because E2B receivers verify exactly this.
"""
from __future__ import annotations

import base64
import builtins
import hashlib
import hmac
import ipaddress
import socket
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Literal, overload
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select

from sandboxd.errors import Invalid, NotFound
from sandboxd.core.events import LIFECYCLE_TYPES
from sandboxd.core.store.db import Store
from sandboxd.core.store.monitoring import DeliveryRow, WebhookRow
from sandboxd.core.store.tables import EventRow
from sandboxd.core.store.tables import DEFAULT_TEAM_ID
from sandboxd.monitor.e2b_events import rfc3339


def sign_v1(secret: str, raw_body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(secret.encode() + raw_body).digest()).decode().rstrip("=")


def verify_v1(secret: str, raw_body: bytes, header: str) -> bool:
    """Accepts the standard and the URL-safe alphabet (E2B's docs have shown both), in constant time."""
    std = sign_v1(secret, raw_body)
    url = std.replace("+", "-").replace("/", "_")
    got = header.encode("utf-8", "replace")  # bytes: compare_digest raises TypeError on non-ASCII str
    return hmac.compare_digest(got, std.encode()) or hmac.compare_digest(got, url.encode())


# IPv6 forms that carry an IPv4 address a relay or translator would reach: a webhook must not get to a
# blocked IPv4 address through them. Teredo and the NAT64 prefixes are refused whole (their relays are
# outside our view); 6to4 is judged by the address it embeds.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_V4_COMPAT = ipaddress.ip_network("::/96")


def _blocked(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.teredo is not None or any(ip in n for n in _NAT64) or ip in _V4_COMPAT:
            return True
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
    return (not ip.is_global or ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
            or ip.is_reserved or ip.is_unspecified)


def check_url(url: str, *, allow_private: bool) -> list[str]:
    """http(s) only; hosts that are (or resolve to) private, loopback or link-local addresses are refused
    unless the operator allows them, so a webhook cannot be used to probe the internal network.

    Returns the addresses the host resolved to, every one of them checked. A delivery connects to one of
    these rather than resolving the name again: a second lookup could answer differently (DNS rebinding)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("webhook url must be an absolute http(s) URL")
    if parts.username or parts.password:
        raise Invalid("webhook url must not carry credentials")
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise Invalid("webhook url has an invalid port") from None
    try:
        addrs = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        except (socket.gaierror, UnicodeError):
            raise Invalid(f"webhook host {host!r} does not resolve") from None
        addrs = list(dict.fromkeys(ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos))
    if not allow_private and any(_blocked(a) for a in addrs):
        raise Invalid("webhook url points at a private or loopback address (set SANDBOXD_WEBHOOK_ALLOW_PRIVATE=true to allow)")
    return [str(a) for a in addrs]


def _check_events(events: Any) -> list[str]:
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise Invalid("events must be a non-empty list of event types")
    unknown = [e for e in events if e not in LIFECYCLE_TYPES]
    if unknown:
        raise Invalid(f"unknown event types: {', '.join(unknown)}", details={"allowed": list(LIFECYCLE_TYPES)})
    return list(dict.fromkeys(events))


@overload
def _str(body: dict, key: str, *, required: Literal[True]) -> str: ...
@overload
def _str(body: dict, key: str, *, required: bool) -> str | None: ...
def _str(body: dict, key: str, *, required: bool) -> str | None:
    v = body.get(key)
    if v is None:
        if required:
            raise Invalid(f"{key} is required")
        return None
    if not isinstance(v, str) or not v.strip():
        raise Invalid(f"{key} must be a non-empty string")
    return v


def to_wire(w: WebhookRow) -> dict[str, Any]:
    # teamId per the Argus spec; the seed's docs example spells it teamID, so both are sent.
    return {"id": w.id, "teamId": w.team_id, "teamID": w.team_id, "name": w.name, "createdAt": rfc3339(w.created_at),
            "url": w.url, "enabled": w.enabled, "events": list(w.events)}


class WebhookRegistry:
    def __init__(self, store: Store, *, allow_private: bool, on_change: Callable[[], None] | None = None):
        self.store = store
        self.allow_private = allow_private
        self.on_change = on_change  # after a committed change (the dispatcher rests while no webhook is enabled)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def create(self, body: dict[str, Any], team_id: str = DEFAULT_TEAM_ID) -> dict[str, Any]:
        name = _str(body, "name", required=True)
        url = _str(body, "url", required=True)
        secret = _str(body, "signatureSecret", required=True)
        enabled = body.get("enabled", True)
        if not isinstance(enabled, bool):
            raise Invalid("enabled must be a boolean")
        events = _check_events(body.get("events"))
        check_url(url, allow_private=self.allow_private)
        now = datetime.now(timezone.utc)
        with self.store.tx() as s:
            last = s.scalar(select(func.max(EventRow.id))) or 0
            row = WebhookRow(id=str(uuid.uuid4()), name=name, url=url, enabled=enabled, events=events, secret=secret,
                             after_event_id=last, created_at=now, updated_at=now, team_id=team_id)
            s.add(row)
        self._changed()
        return to_wire(row)

    def list(self, team: str | None = None) -> list[dict[str, Any]]:
        q = select(WebhookRow).order_by(WebhookRow.created_at)
        if team is not None:
            q = q.where(WebhookRow.team_id == team)
        with self.store.tx() as s:
            return [to_wire(w) for w in s.scalars(q)]

    def get(self, webhook_id: str, team: str | None = None) -> dict[str, Any]:
        with self.store.tx() as s:
            return to_wire(self._row(s, webhook_id, team))

    def update(self, webhook_id: str, body: dict[str, Any], team: str | None = None) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        for key, attr in (("name", "name"), ("url", "url"), ("signatureSecret", "secret")):
            if key in body:
                changes[attr] = _str(body, key, required=True)
        if "enabled" in body:
            if not isinstance(body["enabled"], bool):
                raise Invalid("enabled must be a boolean")
            changes["enabled"] = body["enabled"]
        if "events" in body:
            changes["events"] = _check_events(body["events"])
        if "url" in changes:
            check_url(changes["url"], allow_private=self.allow_private)
        with self.store.tx() as s:
            row = self._row(s, webhook_id, team)
            for k, v in changes.items():
                setattr(row, k, v)
            row.updated_at = datetime.now(timezone.utc)
            wire = to_wire(row)
        self._changed()
        return wire

    def delete(self, webhook_id: str, team: str | None = None) -> None:
        with self.store.tx() as s:
            s.delete(self._row(s, webhook_id, team))
            s.execute(delete(DeliveryRow).where(DeliveryRow.webhook_id == webhook_id))
        self._changed()

    def deliveries(self, webhook_id: str, *, limit: int = 100, status: str | None = None, team: str | None = None
                   ) -> builtins.list[dict[str, Any]]:
        with self.store.tx() as s:
            self._row(s, webhook_id, team)
            q = select(DeliveryRow).where(DeliveryRow.webhook_id == webhook_id)
            if status:
                q = q.where(DeliveryRow.status == status)
            rows = s.scalars(q.order_by(DeliveryRow.event_id.desc()).limit(limit))
            return [delivery_wire(d) for d in rows]

    @staticmethod
    def _row(s, webhook_id: str, team: str | None) -> WebhookRow:
        row = s.get(WebhookRow, webhook_id)
        if row is None or team not in (None, row.team_id):
            raise NotFound(f"webhook {webhook_id} not found")
        return row


def delivery_wire(d: DeliveryRow) -> dict[str, Any]:
    return {
        "id": d.id, "webhookId": d.webhook_id, "eventId": d.event_id, "eventType": d.event_type,
        "sandboxId": d.sandbox_id, "deliveryStatus": d.status, "attempts": d.attempts,
        "lastDeliveryId": d.last_attempt_id, "responseStatusCode": d.response_status, "error": d.error,
        "durationMs": None if d.latency_ms is None else round(d.latency_ms, 1),
        "createdAt": rfc3339(d.created_at), "updatedAt": rfc3339(d.updated_at),
    }
