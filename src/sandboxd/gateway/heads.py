"""In-place edits of a parsed request head (its raw bytes are what the proxy forwards)."""
from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

if TYPE_CHECKING:
    from sandboxd.gateway.proxy import Head


def replace_headers(head: Head, values: dict[str, str]) -> None:
    """Set headers (lower-case names) in place, dropping any the client sent under those names."""
    lines = head.raw[:-4].split(b"\r\n")
    keep = [lines[0]] + [ln for ln in lines[1:]
                         if ln.partition(b":")[0].strip().lower().decode("latin-1") not in values]
    keep += [f"{name}: {value}".encode("latin-1") for name, value in values.items()]
    head.raw = b"\r\n".join(keep) + b"\r\n\r\n"
    head.headers.update(values)


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
    new = path + ("?" + "&".join(rest) if rest else "")
    first, crlf, tail = head.raw.partition(b"\r\n")
    method = first.partition(b" ")[0]
    head.raw = method + b" " + new.encode("latin-1") + b" " + head.version.encode() + crlf + tail
    head.target = new
    return found
