"""Copying a sandbox's own changes (its overlay upper dir) out of it, for snapshots.

`cp -a` is the tool that keeps what an upper dir holds: whiteouts (char 0:0), opaque-dir xattrs, owners (the
template store's id convention, which a sandbox's disk stores too: templates/shift.py), modes and hard
links. It copies symlinks as symlinks and FIFOs as new FIFOs, never reading through them. The sandbox must be
frozen while it runs: cp walks the tree by path, and a process still running could swap a directory it is
about to enter for a symlink to the host.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from sandboxd.errors import RuntimeFailure


async def copy_tree(upper: Path, dest: Path) -> None:
    """Copy upper's contents into the existing directory dest; errors name neither host path."""
    proc = await asyncio.create_subprocess_exec("cp", "-a", "--", f"{upper}/.", f"{dest}/",
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        text = out.decode(errors="replace")[-2000:].replace(str(upper), "").replace(str(dest), "")
        raise RuntimeFailure(f"copying the sandbox's changes failed: {text}")
