"""The sandboxes' seccomp profile: the containers-common profile, resolved for our capability set, plus
rules that block new namespaces and every socket address family a sandbox does not need.

The stock profile still lets a sandbox create nested user namespaces (docs/threat-model.md, boundary 1), the door to most
kernel escapes of recent years. So `clone` is allowed only without namespace flags, `clone3` (whose flags
live in memory seccomp cannot read) fails with ENOSYS so libc falls back to `clone`, and `unshare`/`setns`
fail with EPERM.

Sockets: only AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK (the agent, user code, `ip`, getaddrinfo); any other
family fails with EAFNOSUPPORT. AF_VSOCK above all: in a VM it is a channel to the hypervisor's host, and
every rarely used family (AF_KEY, AF_ALG, AF_TIPC, AF_RDS, AF_CAN, ...) is kernel attack surface.
The allow-list is written as exact rules on `socket`'s first argument; a deny rule next to an unconditional
allow would be silently dropped by libseccomp (the unconditional rule wins).

Only the x86-64 ABI: the i386 one reaches sockets through socketcall(2), whose arguments live in memory
seccomp cannot read, and libseccomp turns every `socket` rule into an unconditional
socketcall(SYS_SOCKET) rule there, so no family could be refused. A sandbox's i386 system calls (32-bit
programs, `int 0x80`) are refused with the filter's bad-architecture action (the calling thread is
killed); x32 is not built into the kernels we run.

seccomp.json next to this module is the generated OCI-format profile; `generate()` rebuilds it from
Debian's golang-github-containers-common file and a test checks the two agree.
"""
from __future__ import annotations

import copy
import errno
import json
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any

CONTAINERS_COMMON = Path("/usr/share/containers/seccomp.json")
SHIPPED = Path(__file__).with_name("seccomp.json")

# Docker's default set minus MKNOD and NET_RAW: enough for package managers and servers on high ports.
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_SETGID", "CAP_SETUID",
    "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)

# CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
NAMESPACE_FLAGS = 0x7E020000
_OURS = {"clone", "clone3", "unshare", "setns", "socket", "socketpair", "socketcall"}
# AF_UNIX, AF_INET, AF_INET6, AF_NETLINK
SOCKET_FAMILIES = (1, 2, 10, 16)
_ARCH_ALIASES = {"amd64", "x86", "x32"}  # containers-common's names for what x86-64 hosts run


def _applies(rule: dict[str, Any], caps: set[str]) -> bool:
    inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
    if inc.get("arches") and not (set(inc["arches"]) & _ARCH_ALIASES):
        return False
    if exc.get("arches") and set(exc["arches"]) & _ARCH_ALIASES:
        return False
    if inc.get("caps") and not set(inc["caps"]) <= caps:
        return False
    if exc.get("caps") and set(exc["caps"]) & caps:
        return False
    return True  # minKernel conditions are all below the kernels we support


def namespace_rules() -> list[dict[str, Any]]:
    return [
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
        {"names": ["unshare", "setns"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
    ]


def _arg0(value: int, op: str = "SCMP_CMP_EQ") -> list[dict[str, Any]]:
    return [{"index": 0, "value": value, "valueTwo": 0, "op": op}]


def socket_rules() -> list[dict[str, Any]]:
    """socket() for SOCKET_FAMILIES, socketpair() for AF_UNIX; EAFNOSUPPORT for every other family.
    Each value of the first argument matches exactly one rule (libseccomp keeps no order between them)."""
    top = max(SOCKET_FAMILIES)
    refuse: dict[str, Any] = {"action": "SCMP_ACT_ERRNO", "errnoRet": errno.EAFNOSUPPORT}
    rules = [{"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": _arg0(f)} for f in SOCKET_FAMILIES]
    rules += [{"names": ["socket"], **refuse, "args": _arg0(f)} for f in range(top) if f not in SOCKET_FAMILIES]
    rules.append({"names": ["socket"], **refuse, "args": _arg0(top, "SCMP_CMP_GT")})
    rules.append({"names": ["socketpair"], "action": "SCMP_ACT_ALLOW", "args": _arg0(socket.AF_UNIX)})
    rules.append({"names": ["socketpair"], **refuse, "args": _arg0(socket.AF_UNIX, "SCMP_CMP_NE")})
    return rules


def generate(source: Path = CONTAINERS_COMMON, caps: tuple[str, ...] = CAPABILITIES) -> dict[str, Any]:
    """Turn a containers-common (docker-format) profile into the OCI `linux.seccomp` object we ship."""
    doc = json.loads(source.read_text())
    capset = set(caps)
    syscalls = []
    for rule in doc["syscalls"]:
        if not _applies(rule, capset):
            continue
        names = [n for n in rule["names"] if n not in _OURS]
        if not names:
            continue
        out: dict[str, Any] = {"names": names, "action": rule["action"]}
        if rule.get("args"):
            out["args"] = rule["args"]
        if rule.get("errnoRet") is not None:
            out["errnoRet"] = rule["errnoRet"]
        syscalls.append(out)
    return {
        "defaultAction": doc["defaultAction"],
        "defaultErrnoRet": doc.get("defaultErrnoRet", errno.EPERM),
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": syscalls + namespace_rules() + socket_rules(),
    }


@lru_cache(maxsize=1)
def _shipped() -> dict[str, Any]:
    return json.loads(SHIPPED.read_text())


def profile() -> dict[str, Any]:
    """The OCI seccomp object for a sandbox's config.json (a fresh copy the caller may change)."""
    return copy.deepcopy(_shipped())


if __name__ == "__main__":  # regenerate: python -m sandboxd.runtime.seccomp
    SHIPPED.write_text(json.dumps(generate(), indent=1) + "\n")
    print(f"wrote {SHIPPED}")
