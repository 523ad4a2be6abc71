"""Which Unix user an envd request acts as, and path resolution relative to that user's home.

E2B clients name the user in `Authorization: Basic base64("<user>:")`; with no header envd uses its
default user: the template's USER when that is not root, else `user` (uid 1000, home /home/user) in every
template. Outside a template (the fake
backend, in-process tests) that user may not exist: the default then falls back to the agent's own
user, while an explicitly named unknown user is refused like envd does.
"""
from __future__ import annotations

import base64
import binascii
import os

from sandboxd.errors import Forbidden, Invalid, Unauthorized

from ..server import Request
from ..users import User, lookup, myself, template_user, template_workdir

DEFAULT_USER = "user"


def named_in(req: Request) -> str | None:
    """The user from HTTP Basic auth or the `username` query parameter (signed-URL style)."""
    auth = req.headers.get("authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            raw = base64.b64decode(auth[6:].strip(), validate=False).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed Basic authorization header") from None
        name = raw.split(":", 1)[0]
        if name:
            return name
    return req.query.get("username") or None


def resolve(name: str | None) -> User:
    if name:
        user = lookup(name)
        if user is None:
            raise Unauthorized(f"invalid username: '{name}'")
        if not user.is_self and os.geteuid() != 0:
            raise Forbidden(f"the agent cannot act as '{name}'")
        return user
    return lookup(template_user() or DEFAULT_USER) or myself()


def default_cwd(user: User) -> str:
    """Where a process or a context starts when the request names no cwd: the template's WORKDIR, if it has
    one of its own, else the user's home (envd's rule)."""
    return template_workdir() or user.home


def for_request(req: Request) -> User:
    return resolve(named_in(req))


def expand(path: str | None, user: User, *, default: str | None = None) -> str:
    """Absolute, normalised path: `~` and relative paths start at the user's home (envd's rule)."""
    if not path:
        if default is None:
            raise Invalid("path is required")
        path = default
    if "\x00" in path:
        raise Invalid("path contains a NUL byte")
    if path == "~" or path.startswith("~/"):
        path = user.home + path[1:]
    elif not path.startswith("/"):
        path = os.path.join(user.home, path)
    return os.path.normpath(path)
