"""Compiled seccomp filters, reused across sandboxes.

crun turns the OCI seccomp profile into BPF with libseccomp on every `run`: about half of crun's CPU per
sandbox on these machines (≈ 16 ms). It also writes the program it loads to `<state dir>/<id>/seccomp.bpf`
(where `crun exec` reads it back for later processes). We keep that file's bytes per profile and give them to
the next sandboxes through crun's `run.oci.seccomp_bpf_data` annotation: crun then loads that program as is.
The program is the one crun itself built from the same profile, so the filter is identical, not a rewrite.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("sandboxd.runtime")
ANNOTATION = "run.oci.seccomp_bpf_data"
_SOCK_FILTER_SIZE = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k
_MAX_INSNS = 4096  # BPF_MAXINSNS: the kernel refuses longer programs


class BpfCache:
    def __init__(self, runtime: str):
        # Only crun knows the annotation (runc would ignore it and compile anyway).
        self.enabled = Path(runtime).name == "crun"
        self._programs: dict[str, str] = {}

    @staticmethod
    def key(profile: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(profile, sort_keys=True).encode()).hexdigest()

    def annotate(self, cfg: dict[str, Any]) -> str | None:
        """Add the compiled program for cfg's profile when it is known. Returns the profile's key, for
        learn(), or None when there is nothing to learn (no profile, or not crun)."""
        profile = (cfg.get("linux") or {}).get("seccomp")
        if not self.enabled or not profile:
            return None
        key = self.key(profile)
        program = self._programs.get(key)
        if program is not None:
            cfg.setdefault("annotations", {})[ANNOTATION] = program
        return key

    def program(self, key: str | None) -> bytes | None:
        """The compiled program for `key`, once learned (what an agent forked by the zygote loads)."""
        program = self._programs.get(key) if key else None
        return base64.b64decode(program) if program else None

    def learn(self, key: str | None, state_dir: Path) -> None:
        """Keep the program crun compiled for `key` from the state dir of a container it just started."""
        if key is None or key in self._programs:
            return
        try:
            data = (state_dir / "seccomp.bpf").read_bytes()
        except OSError as exc:
            log.debug("no compiled seccomp program in %s: %s", state_dir, exc)
            return
        if not data or len(data) % _SOCK_FILTER_SIZE or len(data) // _SOCK_FILTER_SIZE > _MAX_INSNS:
            log.warning("ignoring a malformed seccomp program (%d bytes) in %s", len(data), state_dir)
            return
        self._programs[key] = base64.b64encode(data).decode()
