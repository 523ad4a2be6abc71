"""Looking things up through a stack of overlay layers, and adding paths to a new layer safely.

Layers are overlayfs lower dirs, top-most first. A char device 0:0 is a whiteout (the path was deleted
in that layer). Paths are resolved through symlinks of the lower layers (Debian's /bin -> usr/bin), so
a new layer never shadows a symlinked directory with a real one.

Every layer above the built-ins was written by a build's own code, so nothing in it is opened from the
host by joining paths: lookups and reads go through sandboxd.runtime.inroot.Stack, which resolves
symlinks inside the image and reads regular files only, up to a cap. Only the new layer a step is
making (a directory this process created, empty but for what it put there) is written by host path.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from sandboxd.errors import Invalid
from sandboxd.runtime import inroot

PASSWD_LIMIT = 4 * 1024 * 1024


def clean_path(path: str, cwd: str = "/") -> str:
    """An absolute, normalised in-image path (relative paths are taken from cwd); '..' cannot escape '/'."""
    try:
        return inroot.clean(path, cwd)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def lookup(layers: list[Path], path: str) -> tuple[Path, os.stat_result] | None:
    """(host path, lstat) of path's top-most version in the stack, or None when absent or whited out.
    The host path names the file; it is never to be opened (it may be a symlink to the host)."""
    try:
        found = inroot.Stack(layers).lookup(clean_path(path))
    except OSError:
        return None
    return (found.host_path, found.st) if found else None


def resolve(layers: list[Path], path: str) -> str:
    """path with every symlinked directory component resolved inside the image (not the host)."""
    try:
        return inroot.Stack(layers).resolve(clean_path(path))
    except inroot.Refused as exc:
        raise Invalid(f"cannot resolve {path} in the image: {exc.strerror}") from None


def is_dir(layers: list[Path], path: str) -> bool:
    """Whether path is a directory in the image (symlinks followed inside the image)."""
    return inroot.Stack(layers).is_dir(clean_path(path))


def ensure_dirs(layer: Path, path: str, lowers: list[Path], *, leaf_owner: tuple[int, int] | None = None,
                default_owner: tuple[int, int] = (0, 0)) -> Path:
    """Create path (already resolved) as directories in layer, copying each component's owner and mode from
    the lower layers where it exists there (so a new layer does not change /home/user's owner)."""
    current = layer
    parts = [p for p in path.split("/") if p]
    sofar = ""
    for i, part in enumerate(parts):
        sofar += "/" + part
        current = current / part
        below = lookup(lowers, sofar)
        if below and stat.S_ISDIR(below[1].st_mode):
            mode, owner = stat.S_IMODE(below[1].st_mode), (below[1].st_uid, below[1].st_gid)
        else:
            mode, owner = 0o755, default_owner
        if i == len(parts) - 1 and leaf_owner is not None and not below:
            owner = leaf_owner
        if not current.exists():
            current.mkdir()
            os.chown(current, *owner)
            os.chmod(current, mode)
    return current


def passwd_entry(layers: list[Path], user: str) -> tuple[int, int] | None:
    """(uid, gid) inside the image for a user name or 'uid[:gid]', read from the image's /etc/passwd.
    An /etc/passwd that is not a regular file of the image (a symlink out, a FIFO, a device) has no users."""
    name, _, group = user.partition(":")
    if name.isdigit():
        uid = int(name)
        return uid, int(group) if group.isdigit() else uid
    try:
        text = inroot.Stack(layers).read("/etc/passwd", PASSWD_LIMIT).decode(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == name and fields[2].isdigit() and fields[3].isdigit():
            return int(fields[2]), int(group) if group.isdigit() else int(fields[3])
    return None
