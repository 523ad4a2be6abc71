"""One host uid range per sandbox: which sandbox holds which range, host-wide.

Range k covers host ids [uid_base + k * uid_count, + uid_count). Range 0 is the template store's on-disk
convention (templates/shift.py) and no sandbox runs in it; sandboxes get 1..uid_ranges. So a process that
escapes one sandbox, or a host user who runs a binary one sandbox wrote, holds ids no other sandbox's files
carry.

The ranges must be the platform's alone: a host user given subordinate ids in one of them (/etc/subuid,
/etc/subgid, used by newuidmap for rootless containers) could act as that sandbox's ids. subid_overlaps()
names such grants; the backend logs them at start.

A range is claimed by a symlink `/run/sandboxd/uid-slots/<k>` whose target is the claiming sandbox's dir:
symlink(2) is atomic and fails when the name exists, so two daemons (several data dirs on one host) never
hand out the same range. The slot is also kept in the sandbox's record (state.json), so a restart keeps it;
/run is a tmpfs, so after a host reboot the records claim their slots again (recovery.py). A claim whose
sandbox dir no longer exists (a data dir deleted with sandboxes in it) is stale and taken over.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from sandboxd.errors import CapacityExceeded, RuntimeFailure

SLOTS_DIR = Path("/run/sandboxd/uid-slots")
MAX_HOST_ID = 2**32 - 2  # (uid_t)-1 is "no id"
_lock = threading.Lock()
_held: dict[int, str] = {}  # slot -> owner this process claimed it for: others skip it without a syscall


class SlotsExhausted(CapacityExceeded):
    """Every uid range is held by a sandbox (running or stopped)."""


def base(settings, slot: int) -> int:
    """The first host uid of a slot's range."""
    return settings.uid_base + slot * settings.uid_count


def check(settings) -> None:
    last = base(settings, settings.uid_ranges) + settings.uid_count - 1
    if last > MAX_HOST_ID:
        raise RuntimeFailure(f"uid_base + (uid_ranges + 1) * uid_count must stay below 2^32 ({last} is not)")


SUBID_FILES = (Path("/etc/subuid"), Path("/etc/subgid"))


def subid_overlaps(settings) -> list[str]:
    """The /etc/subuid and /etc/subgid lines whose ranges meet the store's or a sandbox's ids."""
    low, high = settings.uid_base, base(settings, settings.uid_ranges) + settings.uid_count
    found = []
    for path in SUBID_FILES:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                start, count = int(parts[1]), int(parts[2])
                if start < high and start + count > low:
                    found.append(f"{path}: {line.strip()}")
    return found


def _owner(slot: int) -> str | None:
    try:
        return os.readlink(SLOTS_DIR / str(slot))
    except FileNotFoundError:
        return None


def claim(settings, sandbox_dir: Path, prefer: int | None = None) -> int:
    """Claim a free slot for the sandbox at sandbox_dir (its own earlier one when prefer is still free or
    already its own); SlotsExhausted when none is left."""
    check(settings)
    SLOTS_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    owner = str(sandbox_dir)
    with _lock:
        order: range | list[int] = range(1, settings.uid_ranges + 1)
        if prefer is not None and 1 <= prefer <= settings.uid_ranges:
            order = [prefer, *order]
        for slot in order:
            if _held.get(slot, owner) != owner:
                continue
            link = SLOTS_DIR / str(slot)
            try:
                os.symlink(owner, link)
                _held[slot] = owner
                return slot
            except FileExistsError:
                pass
            held_by = _owner(slot)
            if held_by == owner:
                _held[slot] = owner
                return slot
            if held_by is not None and not os.path.isdir(held_by):
                try:  # stale: its sandbox is gone; replace the claim atomically
                    tmp = SLOTS_DIR / f".{slot}.{os.getpid()}.{threading.get_ident()}"
                    os.symlink(owner, tmp)
                    os.rename(tmp, link)
                    _held[slot] = owner
                    return slot
                except OSError:
                    continue
    raise SlotsExhausted(f"all {settings.uid_ranges} sandbox uid ranges are in use (setting uid_ranges)")


def release(sandbox_dir: Path, slot: int | None) -> None:
    """Give the slot back, if the sandbox at sandbox_dir still holds it."""
    if slot is None:
        return
    with _lock:
        if _held.get(slot) == str(sandbox_dir):
            del _held[slot]
        if _owner(slot) == str(sandbox_dir):
            try:
                os.unlink(SLOTS_DIR / str(slot))
            except FileNotFoundError:
                pass


def claimed_dirs_records() -> list[Path]:
    """The record (state.json) of every sandbox on the host that holds a uid range, whatever its data dir."""
    try:
        names = os.listdir(SLOTS_DIR)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        owner = _owner(int(name)) if name.isdigit() else None
        if owner:
            out.append(Path(owner) / "state.json")
    return out


__all__ = ["SLOTS_DIR", "SUBID_FILES", "subid_overlaps", "claimed_dirs_records", "SlotsExhausted", "base", "check",
           "claim", "release"]
