"""envd's shapes for the files service (agent/files.py): an Entry as envd's EntryInfo, a watch's change
as its FilesystemEvent. The Filesystem RPCs themselves are the handlers in envd/routes.py.

Like envd, an entry's `mode` is its permission bits only, and a symlink is reported as what it points to
(`type`), with `symlinkTarget` set; `metadata` is the file's `user.e2b.*` extended attributes.
"""
from __future__ import annotations

import stat
from datetime import datetime, timezone

from ..files import Entry
from ..watch import Change

EVENT_TYPES = {"created": "EVENT_TYPE_CREATE", "modified": "EVENT_TYPE_WRITE", "deleted": "EVENT_TYPE_REMOVE",
               "renamed": "EVENT_TYPE_RENAME", "chmod": "EVENT_TYPE_CHMOD"}
TYPES = {"dir": "FILE_TYPE_DIRECTORY", "file": "FILE_TYPE_FILE"}


def entry_info(e: Entry) -> dict:
    st = e.st
    if e.is_symlink:
        ftype = TYPES.get(e.target_kind or "", "FILE_TYPE_SYMLINK")
    else:
        ftype = "FILE_TYPE_DIRECTORY" if e.is_dir else "FILE_TYPE_FILE"
    info: dict = {
        "name": e.name, "type": ftype, "path": e.path, "size": str(st.st_size),
        "mode": stat.S_IMODE(st.st_mode), "permissions": stat.filemode(st.st_mode),
        "owner": e.owner, "group": e.group,
        "modifiedTime": datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat().replace("+00:00", "Z"),
    }
    if e.symlink_target is not None:
        info["symlinkTarget"] = e.symlink_target
    if e.metadata:
        info["metadata"] = e.metadata
    return info


def event(ch: Change) -> dict:
    ev: dict = {"name": ch.name, "type": EVENT_TYPES.get(ch.kind, "EVENT_TYPE_WRITE")}
    if ch.entry is not None:
        ev["entry"] = entry_info(ch.entry)
    return ev
