"""A parsed request head, and the edits routing makes to it before it is forwarded.

The gateway never forwards a client's bytes: a `Head` holds the request line and the header fields the
strict parser (gateway/framing.py) accepted, and what the agent receives is written from these values
(`framing.upstream_request`). So edits here change values, not bytes, and `raw` is only a rendering of
them.
"""
from __future__ import annotations

from urllib.parse import unquote_plus


class Head:
    __slots__ = ("method", "target", "version", "fields", "headers")

    def __init__(self, method: str, target: str, version: str, fields: list[tuple[str, str]]):
        self.method, self.target, self.version = method, target, version
        self.fields = fields  # (name as the client spelled it, value), in order
        self.headers = {name.lower(): value for name, value in fields}  # last value wins (duplicates of
        # the headers routing reads are refused by the parser, so "last" is "only" for those)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def raw(self) -> bytes:
        lines = [f"{self.method} {self.target} {self.version}"] + [f"{n}: {v}" for n, v in self.fields]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def replace_headers(head: Head, values: dict[str, str]) -> None:
    """Set headers (lower-case names), dropping any the client sent under those names."""
    head.fields = [(n, v) for n, v in head.fields if n.lower() not in values] + list(values.items())
    head.headers = {name.lower(): value for name, value in head.fields}


def bearer(head: Head) -> str | None:
    """The token of an `Authorization: Bearer` header ("" when it is empty); None without one."""
    auth = head.header("authorization") or ""
    return auth[7:].strip() if auth[:7].lower() == "bearer " else None


def is_websocket(head: Head) -> bool:
    return "websocket" in (head.header("upgrade") or "").lower()


def take_query_param(head: Head, name: str) -> str | None:
    """Remove `name` from the request target's query (in place) and return its value."""
    path, sep, query = head.target.partition("?")
    if not sep:
        return None
    found, rest = None, []
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if unquote_plus(key) == name:
            found = unquote_plus(value)
        elif part:
            rest.append(part)
    if found is None:
        return None
    head.target = path + ("?" + "&".join(rest) if rest else "")
    return found
