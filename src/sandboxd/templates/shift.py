"""Shift a rootfs's owners into the template store's id convention, once per image.

The store keeps a template's files owned by uid_base + uid on the host (range 0, which no sandbox runs
in). Each sandbox has its own host range and sees the layers through mounts idmapped from this convention
to its range (runtime/rootfs.py, runtime/idmap.py), so shifting happens once when an image is built, never
per sandbox. Why shifted rather than stored as uid 0..n: a layer left at uid 0 would give host root's ids to
whatever a build wrote, and existing stores and build outputs (copied from a sandbox's disk, which stores
the same convention) stay valid.
It is hardlink-safe (each inode is shifted once, not once per name) and setuid-safe (chown clears
the setuid/setgid bits and file capabilities; they are put back).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

_CAP_XATTR = "security.capability"


def _get_caps(path: str) -> bytes | None:
    try:
        return os.getxattr(path, _CAP_XATTR, follow_symlinks=False)
    except OSError:
        return None


def shift_tree(root: Path, uid_base: int, uid_count: int = 65536) -> int:
    """Add uid_base to the owner and group of every file under root (which must hold unshifted ids).

    Returns how many inodes were shifted. Ids already at or beyond uid_count are left alone, so a
    tree that is partly shifted is never shifted twice.
    """
    seen: set[tuple[int, int]] = set()
    shifted = 0
    paths = [str(root)]
    for dirpath, dirnames, filenames in os.walk(root):
        paths.extend(os.path.join(dirpath, n) for n in dirnames + filenames)
    for path in paths:
        st = os.lstat(path)
        key = (st.st_dev, st.st_ino)
        if key in seen:
            continue
        seen.add(key)
        uid = st.st_uid + uid_base if st.st_uid < uid_count else st.st_uid
        gid = st.st_gid + uid_base if st.st_gid < uid_count else st.st_gid
        if (uid, gid) == (st.st_uid, st.st_gid):
            continue
        is_link = stat.S_ISLNK(st.st_mode)
        caps = None if is_link else _get_caps(path)
        os.lchown(path, uid, gid)
        if not is_link:
            # chown drops S_ISUID/S_ISGID on regular files; restore the exact mode.
            if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(path, stat.S_IMODE(st.st_mode))
            if caps is not None:
                os.setxattr(path, _CAP_XATTR, caps, follow_symlinks=False)
        shifted += 1
    return shifted


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """Give every file under root to uid:gid (host ids), keeping setuid bits; used for COPY layers."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            st = os.lstat(name)
            os.lchown(name, uid, gid)
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(name, stat.S_IMODE(st.st_mode))
