"""Sandbox networking: a network namespace per sandbox, and for sandboxes with internet access a veth pair,
NAT and the nftables guard.

The OCI runtime gives every sandbox a fresh netns with loopback up. Without internet access that is all.
With it, between `create` and `start`: host side `vh<hash>` with 10.213.x.y/30, sandbox side `eth0`, a default
route, masquerade. One nft table of ours (`inet sandboxd`) holds every rule, written against the `vh*`
interface names so no rule is per sandbox and destroy only has to delete the veth and the netns:

- input: anything arriving from a sandbox veth is dropped, whatever host address it targets (127.0.0.1,
  0.0.0.0-bound services, the veth's own address); replies to nothing are needed since the host never
  connects into sandboxes over the veth (the agent channel is a unix socket).
- forward: sandbox → sandbox dropped, spoofed sources dropped, link-local (cloud metadata) dropped.
"""
from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import json
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from sandboxd.core.errors import RuntimeFailure

TABLE = "sandboxd"
SUBNET = ipaddress.IPv4Network("10.213.0.0/16")
NETNS_DIR = Path("/run/netns")  # only for leftovers of older layouts
LOCK = Path("/run/sandboxd/net.lock")
RULESET_VERSION = "sandboxd-guard-v1"

BASE_RULESET = f"""
table inet {TABLE} {{
  comment "{RULESET_VERSION}"
  chain input {{
    type filter hook input priority filter - 10; policy accept;
    iifname "vh*" drop
  }}
  chain forward {{
    type filter hook forward priority filter - 10; policy accept;
    iifname "vh*" oifname "vh*" drop
    iifname "vh*" ip saddr != {SUBNET} drop
    iifname "vh*" meta nfproto ipv6 drop
    iifname "vh*" ip daddr 169.254.0.0/16 drop
    oifname "vh*" ct state established,related accept
    oifname "vh*" drop
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {SUBNET} oifname != "vh*" masquerade
  }}
}}
"""


def _run(argv: list[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, input=stdin.encode() if stdin else None, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeFailure(f"{argv[0]} failed: {exc}", details={"argv": argv}) from exc
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise RuntimeFailure(f"{' '.join(argv[:3])} failed: {err}", details={"argv": argv, "stderr": err})
    return proc


def ensure_table() -> None:
    """Install our nft table if it is missing or outdated (atomically: one nft transaction)."""
    have = _run(["nft", "list", "table", "inet", TABLE], check=False)
    if have.returncode == 0 and RULESET_VERSION in have.stdout.decode():
        return
    script = (f"add table inet {TABLE}\ndelete table inet {TABLE}\n" if have.returncode == 0 else "") + BASE_RULESET
    _run(["nft", "-f", "-"], stdin=script)


def names(sandbox_id: str) -> tuple[str, str]:
    """(netns name, host veth name); the veth name must fit IFNAMSIZ and start with vh for the guard."""
    h = hashlib.sha1(sandbox_id.encode()).hexdigest()[:10]
    return f"sbx-{h}", f"vh{h}"


@dataclass(frozen=True)
class SandboxNet:
    netns: str
    veth: str | None = None
    host_ip: str | None = None
    sandbox_ip: str | None = None

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    def to_dict(self) -> dict:
        return {"netns": self.netns, "veth": self.veth, "host_ip": self.host_ip, "sandbox_ip": self.sandbox_ip}

    @classmethod
    def from_dict(cls, d: dict) -> "SandboxNet":
        return cls(**d)


@contextmanager
def _locked() -> Iterator[None]:
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _used_blocks() -> set[int]:
    out = _run(["ip", "-j", "-4", "addr", "show"]).stdout.decode() or "[]"
    used = set()
    for link in json.loads(out):
        for a in link.get("addr_info", []):
            ip = ipaddress.IPv4Address(a["local"])
            if ip in SUBNET:
                used.add((int(ip) - int(SUBNET.network_address)) // 4)
    return used


def attach(sandbox_id: str, pid: int) -> SandboxNet:
    """Give the (created, not yet started) sandbox whose init is pid a veth with egress.

    The runtime made the netns (owned by the sandbox's user namespace, loopback up); we reach it through
    /proc/<pid>/ns/net. Without internet access nothing is done: loopback only.
    """
    netns, veth = names(sandbox_id)
    try:
        with _locked():  # address choice and veth creation as one step across every sandboxd process
            used = _used_blocks()
            block = next(i for i in range(1, SUBNET.num_addresses // 4) if i not in used)
            base = int(SUBNET.network_address) + 4 * block
            host_ip, sbx_ip = str(ipaddress.IPv4Address(base + 1)), str(ipaddress.IPv4Address(base + 2))
            _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", str(pid)])
            _run(["ip", "-b", "-"], stdin=f"addr add {host_ip}/30 dev {veth}\nlink set {veth} up\n")
        Path(f"/proc/sys/net/ipv6/conf/{veth}/disable_ipv6").write_text("1")
        _run(["nsenter", "-t", str(pid), "-n", "ip", "-b", "-"], stdin=(
            f"addr add {sbx_ip}/30 dev eth0\nlink set eth0 up\nroute add default via {host_ip}\n"))
        return SandboxNet(netns, veth, host_ip, sbx_ip)
    except BaseException:
        destroy(SandboxNet(netns, veth))
        raise


def destroy(net: SandboxNet) -> None:
    """Delete the veth (its peer goes with it) and the netns. Idempotent."""
    if net.veth and Path(f"/sys/class/net/{net.veth}").exists():
        _run(["ip", "link", "del", net.veth], check=False)
    if net.netns_path.exists():
        _run(["ip", "netns", "del", net.netns], check=False)


def leftovers(sandbox_id: str) -> list[str]:
    netns, veth = names(sandbox_id)
    found = []
    if (NETNS_DIR / netns).exists():
        found.append(f"netns {netns}")
    if Path(f"/sys/class/net/{veth}").exists():
        found.append(f"veth {veth}")
    return found
