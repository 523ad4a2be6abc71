"""/proc/<pid>/mountinfo read as rows (proc(5)): the few fields the runtime looks at."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Mount:
    dev: str  # major:minor of the file system
    root: str  # the path within that file system the mount shows
    point: str  # where it is mounted
    fstype: str
    super_options: tuple[str, ...]


def read(pid: int | str = "self") -> list[Mount]:
    out = []
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        out.append(Mount(dev=fields[2], root=fields[3], point=fields[4].replace("\\040", " "),
                         fstype=rest[0] if rest else "",
                         super_options=tuple(rest[2].split(",")) if len(rest) >= 3 else ()))
    return out
