"""The Unix users the agent acts as and names: one lookup for every dialect.

Each dialect words an unknown user its own way (HopX: INVALID_REQUEST "unknown user", envd: unauthenticated
"invalid username"), so a lookup answers None rather than raising.
"""
from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: str

    @property
    def is_self(self) -> bool:
        return self.uid == os.geteuid()

    @property
    def owner(self) -> tuple[int, int] | None:
        """Whom files the API creates for this user belong to (None: the agent's own user)."""
        return None if self.is_self else (self.uid, self.gid)


ROOT = User("root", 0, 0, "/root")
BUILTIN_WORKDIR = "/workspace"  # the built-in templates' WORKDIR: a template that names no other has this


def template_user() -> str | None:
    """The template's USER when it names someone other than root (SANDBOXD_AGENT_USER, set by the runtime):
    the user requests that name none run as."""
    name = os.environ.get("SANDBOXD_AGENT_USER", "")
    return name if name and name not in ("root", "0") else None


def template_workdir() -> str | None:
    """The template's WORKDIR when it names one of its own (SANDBOXD_AGENT_WORKSPACE, set by the runtime)."""
    path = os.environ.get("SANDBOXD_AGENT_WORKSPACE", "")
    return path if path.startswith("/") and path != BUILTIN_WORKDIR else None


def workdir_of(requested: str | None, fallback: str) -> str:
    """A request's working directory. HopX's clients send /workspace when their caller named none: in a
    template with a WORKDIR of its own, that means the template's."""
    own = template_workdir()
    if not requested or (requested == BUILTIN_WORKDIR and own):
        return own or fallback
    return requested


def lookup(user: str | int) -> User | None:
    """The user a name or uid (an int or a string of digits) names; None when there is none. Root is there
    in an image without an /etc/passwd too (busybox-only, scratch)."""
    try:
        pw = pwd.getpwuid(int(user)) if isinstance(user, int) or user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        return ROOT if user in (0, "0", "root") else None
    return User(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir)


def myself() -> User:
    """The agent's own user. HOME wins over the passwd entry: the fake backend points it at the sandbox's
    own directory, and an agent whose uid has no entry still has a home."""
    home = os.environ.get("HOME")
    user = lookup(os.geteuid())
    if user is None:
        return User(str(os.geteuid()), os.geteuid(), os.getegid(), home or "/")
    return User(user.name, user.uid, user.gid, home or user.home)


@lru_cache(maxsize=256)
def name_of(uid: int) -> str:
    """The user name of a uid, or the uid itself when it has no name (listings name every file's owner)."""
    user = lookup(uid)
    return user.name if user is not None else str(uid)


@lru_cache(maxsize=256)
def group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
