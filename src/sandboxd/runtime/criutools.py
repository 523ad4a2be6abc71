"""Which CRIU memory snapshots use (docs/snapshots.md), and the private tools root that provides one.

CRIU must be 4.2 or newer: Debian bookworm's 3.17 fails on kernels 6.13 and later, and 4.1 asks every socket
for SO_PASSCRED, which kernels from 6.16 refuse for inet sockets (fixed in 4.2). `SANDBOXD_CRIU` says which:
"auto" (default) takes the host's `criu` when it is new enough and `criu check` passes, else the private tools
root; "off" turns memory snapshots off (pause then freezes in RAM, everything else works); a path names a criu
binary. The private root is a minimal Debian forky made by mmdebstrap (its CRIU needs a newer glibc than
bookworm's) under `<tools dir>/criu-<recipe hash>/` (SANDBOXD_TOOLS_DIR, default /var/lib/sandboxd/tools: host tools, shared by
every data dir), built by `sandboxd setup`; its criu runs through
that root's own dynamic loader, so nothing of it mixes with the host's libraries. A root is only used once
its build finished (the directory is renamed into place) and its criu passed `criu check`.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("sandboxd.runtime")

SUITE = "forky"  # CRIU 4.2.1; 4.1.1 (trixie) cannot dump an inet socket on kernels >= 6.16 (SO_PASSCRED)
PACKAGES = ("criu",)
MIN_VERSION = (4, 2)
CHECK_TIMEOUT = 60.0
LIBS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")


@dataclass(frozen=True)
class Criu:
    argv: tuple[str, ...]  # the command that runs criu (a loader and its library path for the private root)
    version: str
    source: str  # "host", "tools root <dir>" or "SANDBOXD_CRIU"


def recipe_hash() -> str:
    return hashlib.sha256(json.dumps({"suite": SUITE, "packages": PACKAGES}).encode()).hexdigest()[:16]


def tools_root(tools_dir: Path) -> Path:
    return Path(tools_dir) / f"criu-{recipe_hash()}"


def _root_argv(root: Path) -> tuple[str, ...]:
    return (str(root / "lib64/ld-linux-x86-64.so.2"), "--library-path", ":".join(str(root / p) for p in LIBS),
            str(root / "usr/sbin/criu"))


def _version(argv: tuple[str, ...]) -> tuple[tuple[int, ...], str] | None:
    try:
        out = subprocess.run([*argv, "--version"], capture_output=True, text=True, timeout=CHECK_TIMEOUT).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"Version:\s*([0-9][0-9.]*)", out)
    if not m:
        return None
    return tuple(int(x) for x in m.group(1).split(".") if x), m.group(1)


def _check(argv: tuple[str, ...]) -> str | None:
    """None when `criu check` passes on this kernel, else what it said."""
    try:
        r = subprocess.run([*argv, "check"], capture_output=True, text=True, timeout=CHECK_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return None if r.returncode == 0 and "Looks good" in (r.stdout + r.stderr) else (r.stdout + r.stderr)[-500:]


def _usable(argv: tuple[str, ...], source: str) -> tuple[Criu | None, str]:
    got = _version(argv)
    if got is None:
        return None, f"{source}: criu does not run"
    if got[0] < MIN_VERSION:
        return None, f"{source}: criu {got[1]} is older than {'.'.join(map(str, MIN_VERSION))}"
    failed = _check(argv)
    if failed is not None:
        return None, f"{source}: `criu check` failed: {failed.strip()}"
    return Criu(argv, got[1], source), ""


@functools.lru_cache(maxsize=8)
def find(setting: str, tools_dir: Path) -> tuple[Criu | None, str]:
    """(the CRIU to use, or None and why not). Cached: `criu check` takes ~100 ms."""
    if setting == "off":
        return None, "memory snapshots are off (SANDBOXD_CRIU=off)"
    if setting != "auto":
        return _usable((setting,), "SANDBOXD_CRIU")
    reasons = []
    host = shutil.which("criu")
    if host:
        found, why = _usable((host,), "host")
        if found:
            return found, ""
        reasons.append(why)
    root = tools_root(tools_dir)
    if (root / "usr/sbin/criu").exists():
        found, why = _usable(_root_argv(root), f"tools root {root}")
        if found:
            return found, ""
        reasons.append(why)
    else:
        reasons.append(f"no tools root at {root} (`sandboxd setup` makes it)")
    return None, "no usable CRIU >= 4: " + "; ".join(reasons)


def ensure_root(tools_dir: Path, say=log.info) -> Path | None:
    """Make the private tools root unless the host's criu will do or the root exists; None when not needed."""
    host = shutil.which("criu")
    if host and _usable((host,), "host")[0]:
        return None
    root = tools_root(tools_dir)
    if (root / "usr/sbin/criu").exists():
        return root
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap is not installed (scripts/install.sh installs it)")
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".criu-", dir=root.parent))
    try:
        say(f"criu: a private {SUITE} tools root with {', '.join(PACKAGES)} -> {root}")
        argv = ["mmdebstrap", "--mode=root", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*", SUITE, str(work / "root")]
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0 and "expired" in r.stderr + r.stdout:
            # A mirror snapshot older than its Release file's Valid-Until (an archive mirror, a proxy's copy):
            # the packages are still checked against the archive's signature.
            say("criu: the mirror's Release file has expired; building from it anyway (signatures still checked)")
            shutil.rmtree(work / "root", ignore_errors=True)
            r = subprocess.run([argv[0], "--aptopt=Acquire::Check-Valid-Until \"false\"", *argv[1:]],
                               capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"mmdebstrap failed: {(r.stderr + r.stdout)[-1000:]}")
        (work / "root").rename(root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    find.cache_clear()
    return root
