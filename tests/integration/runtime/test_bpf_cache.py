"""The compiled seccomp program is reused: the first sandbox has crun compile the profile, the next ones get
crun's own program back through `run.oci.seccomp_bpf_data`, and are filtered exactly the same."""
from __future__ import annotations

import base64
import json

import pytest

from support.runtime import spec
from sandboxd.runtime.oci.bpfcache import ANNOTATION, BpfCache

pytestmark = pytest.mark.real


def _seccomp_status(sb, box_id: str) -> dict[str, str]:
    out = sb.sh(box_id, "grep -E '^(Seccomp|Seccomp_filters|NoNewPrivs):' /proc/self/status").stdout
    return dict(line.split(":\t") for line in out.decode().strip().splitlines())


def test_later_sandboxes_load_the_program_crun_compiled_for_the_first(rt_env):
    settings, sb, image = rt_env
    backend = sb.backend
    first = sb.create(spec(image, "bpf1"))
    second = sb.create(spec(image, "bpf2"))
    try:
        cfg1 = json.loads((backend.dir(first.id) / "config.json").read_text())
        cfg2 = json.loads((backend.dir(second.id) / "config.json").read_text())
        # The module-scoped backend may have learnt it already from an earlier test; the second always has it.
        assert ANNOTATION in cfg2.get("annotations", {})
        assert cfg2["linux"]["seccomp"] == cfg1["linux"]["seccomp"]  # still there, for runc and for readers
        program = base64.b64decode(cfg2["annotations"][ANNOTATION])
        # crun writes the program it loads into the state dir (crun exec applies it from there): the same bytes.
        for box in (first, second):
            assert (backend.cli.root / box.id / "seccomp.bpf").read_bytes() == program
        # And the filter does its job in the sandbox that did not compile it.
        for box in (first, second):
            st = _seccomp_status(sb, box.id)
            assert st["Seccomp"].strip() == "2" and st["NoNewPrivs"].strip() == "1"
            # unshare(2) is refused by the profile's namespace rule (EPERM), clone3 gives ENOSYS
            r = sb.py(box.id, "import ctypes, os; l = ctypes.CDLL(None, use_errno=True); "
                              "print(l.unshare(0x10000000), ctypes.get_errno())")
            assert r.stdout.decode().split() == ["-1", "1"]
            r = sb.py(box.id, "import ctypes; l = ctypes.CDLL(None, use_errno=True); "
                              "print(l.syscall(435, 0, 0), ctypes.get_errno())")
            assert r.stdout.decode().split() == ["-1", "38"]
    finally:
        sb.destroy(first.id)
        sb.destroy(second.id)


def test_only_crun_gets_the_annotation_and_only_a_well_formed_program_is_kept(tmp_path):
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []}
    runc = BpfCache("runc")
    assert runc.annotate({"linux": {"seccomp": profile}}) is None
    cache = BpfCache("/usr/bin/crun")
    key = cache.annotate({"linux": {"seccomp": profile}})
    assert key == BpfCache.key(dict(profile))
    assert cache.annotate({"linux": {}}) is None
    (tmp_path / "seccomp.bpf").write_bytes(b"\x00" * 12)  # not a whole number of instructions
    cache.learn(key, tmp_path)
    cfg = {"linux": {"seccomp": profile}}
    cache.annotate(cfg)
    assert "annotations" not in cfg
    (tmp_path / "seccomp.bpf").write_bytes(b"\x06\x00\x00\x00\x00\x00\xff\x7f")  # ret ALLOW
    cache.learn(key, tmp_path)
    cache.annotate(cfg)
    assert base64.b64decode(cfg["annotations"][ANNOTATION]) == b"\x06\x00\x00\x00\x00\x00\xff\x7f"
    other = {"linux": {"seccomp": {**profile, "defaultAction": "SCMP_ACT_KILL"}}}
    cache.annotate(other)
    assert "annotations" not in other  # a different profile never gets another profile's program
