"""The shipped profile's socket rules: every family value meets exactly one rule (libseccomp keeps no order
between overlapping ones), an unconditional rule never sits next to them (it would swallow the refusals),
and only the x86-64 ABI is let in (the i386 one multiplexes sockets through an unfilterable socketcall)."""
from __future__ import annotations

import errno

from sandboxd.runtime import seccomp

OPS = {"SCMP_CMP_EQ": lambda a, v: a == v, "SCMP_CMP_NE": lambda a, v: a != v, "SCMP_CMP_GT": lambda a, v: a > v}


def verdicts(name: str, value: int) -> list[tuple[str, int | None]]:
    found = []
    for rule in seccomp.profile()["syscalls"]:
        if name not in rule["names"]:
            continue
        assert rule.get("args"), f"an unconditional {name} rule would swallow the family rules"
        if all(OPS[a["op"]](value if a["index"] == 0 else None, a["value"]) for a in rule["args"]):
            found.append((rule["action"], rule.get("errnoRet")))
    return found


def test_each_family_meets_exactly_one_rule():
    refused = ("SCMP_ACT_ERRNO", errno.EAFNOSUPPORT)
    for family in [*range(64), 1 << 16, (1 << 32) | 40, (1 << 63) | 2]:
        socket_ok = family in (1, 2, 10, 16)
        assert verdicts("socket", family) == [("SCMP_ACT_ALLOW", None) if socket_ok else refused], family
        assert verdicts("socketpair", family) == [("SCMP_ACT_ALLOW", None) if family == 1 else refused], family


def test_only_the_x86_64_abi_and_no_socketcall():
    profile = seccomp.profile()
    assert profile["architectures"] == ["SCMP_ARCH_X86_64"]
    assert not [r for r in profile["syscalls"] if "socketcall" in r["names"]]
