"""Looking things up through a stack of overlay layers, and adding paths to a new layer safely.

Layers are overlayfs lower dirs, top-most first. A char device 0:0 is a whiteout (the path was deleted
in that layer). Paths are resolved through symlinks of the lower layers (Debian's /bin -> usr/bin), so
a new layer never shadows a symlinked directory with a real one.
"""
from __future__ import annotations

import os
import posixpath
import stat
from pathlib import Path

from sandboxd.core.errors import Invalid


def clean_path(path: str, cwd: str = "/") -> str:
    """An absolute, normalised in-image path (relative paths are taken from cwd); '..' cannot escape '/'."""
    if "\x00" in path:
        raise Invalid("path contains a NUL byte")
    joined = posixpath.join(cwd or "/", path)
    return posixpath.normpath("/" + joined.lstrip("/")).replace("//", "/")


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def lookup(layers: list[Path], path: str) -> tuple[Path, os.stat_result] | None:
    """(host path, lstat) of path's top-most version in the stack, or None when absent or whited out."""
    rel = path.lstrip("/")
    for layer in layers:
        candidate = layer / rel if rel else layer
        try:
            st = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if _is_whiteout(st):
            return None
        return candidate, st
    return None


def resolve(layers: list[Path], path: str, _hops: int = 0) -> str:
    """path with every symlinked directory component resolved inside the image (not the host)."""
    parts = [p for p in clean_path(path).split("/") if p]
    done = "/"
    for i, part in enumerate(parts):
        current = posixpath.join(done, part)
        found = lookup(layers, current)
        if found and stat.S_ISLNK(found[1].st_mode) and i < len(parts) - 1:
            if _hops > 40:
                raise Invalid(f"too many symlinks resolving {path}")
            target = os.readlink(found[0])
            base = "/" if target.startswith("/") else done
            rest = "/".join(parts[i + 1:])
            return resolve(layers, posixpath.join(clean_path(target, base), rest), _hops + 1)
        done = current
    return done


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
    """(uid, gid) inside the image for a user name or 'uid[:gid]', read from the image's /etc/passwd."""
    name, _, group = user.partition(":")
    if name.isdigit():
        uid = int(name)
        return uid, int(group) if group.isdigit() else uid
    found = lookup(layers, "/etc/passwd")
    if not found:
        return None
    for line in found[0].read_text(errors="replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == name:
            return int(fields[2]), int(group) if group.isdigit() else int(fields[3])
    return None
