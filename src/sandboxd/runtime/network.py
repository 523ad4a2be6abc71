"""Sandbox networking: a network namespace per sandbox, and for sandboxes with internet access a veth pair,
NAT and the nftables guard.

The OCI runtime gives every sandbox a fresh netns with loopback up. Without internet access that is all.
With it, between `create` and `start`: host side `vh<hash>` with 10.213.x.y/30, sandbox side `eth0`, a default
route, masquerade. One nft table of ours (`inet sandboxd`) holds every rule, written against the `vh*`
interface names so no rule is per sandbox and destroy only has to delete the veth and the netns:

- input: anything arriving from a sandbox veth is dropped, whatever host address it targets (127.0.0.1,
  0.0.0.0-bound services, the veth's own address); replies to nothing are needed since the host never
  connects into sandboxes over the veth (the agent channel is a unix socket). The one exception is what our
  own redirect sent to the egress proxy (a sandbox whose policy names hosts), which carries the conntrack
  mark REDIRECTED: a DNAT of anyone else's (a container engine's published port) still lets nothing in.
- proxied (the output hook): the egress proxy's connections (the socket mark PROXY_MARK) meet the floor as
  the sandbox's own would, and reach no host address and no sandbox.
- floor (the forward hook, first): the operator's egress floor under every sandbox, build sandboxes included
  (they are sandboxes with internet access like any other). Sandbox → sandbox, spoofed sources and all IPv6
  are dropped; every non-public IPv4 range (CLOSED_RANGES: private, shared, loopback, link-local, multicast,
  reserved, documentation) is rejected unless the operator opened a CIDR that holds the destination
  (SANDBOXD_EGRESS_ALLOW_CIDRS, the `opened` set); traffic into a sandbox is only replies.
  A drop in a base chain is final, so rules that other chains add later (per-sandbox policy, at a later
  priority) can narrow what the floor lets through and never widen it; the floor's `accept` only ends
  the floor's own chain.
- egress_rules (the forward hook, after the floor): each sandbox's own rules (docs/network.md), a chain per
  sandbox reached through the `egress` verdict map keyed by its veth, so a packet meets one lookup and its
  own sandbox's rules only. The chain `e_<veth>` accepts what its allow set holds, records and rejects what
  its deny set holds; the named counter `ec_<veth>` and the dynamic set `et_<veth>` (denied destinations,
  an hour each) are what the sandbox's owner reads back. Rewriting them is one nft transaction: a
  connection opened after it returns meets the new rules, one opened before may keep its packets flowing
  only if the new rules still let them through (every packet is checked, not only the first).
- DNS: sandboxes are given the host's resolvers (`sandbox_resolvers`), which are often on a private
  address (a home router, a cloud VPC resolver). The stated exception: those addresses (the `resolvers`
  set) are reachable on port 53, UDP and TCP, and nothing else at them.

The two sets are rewritten, in one nft transaction with the rest, whenever a sandboxd process prepares
the host (server start, `sandboxd setup`): the floor is per host, from the settings of the last start.
Rejected (not dropped) destinations answer at once with "administratively prohibited", so code in a
sandbox fails fast instead of hanging on a connect.
"""
from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import json
import socket
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from sandboxd.config import parse_cidrs  # noqa: F401  (the setting's syntax; the floor's callers use it from here)
from sandboxd.errors import RuntimeFailure

TABLE = "sandboxd"
SUBNET = ipaddress.IPv4Network("10.213.0.0/16")
NETNS_DIR = Path("/run/netns")  # only for leftovers of older layouts
LOCK = Path("/run/sandboxd/net.lock")
RULESET_VERSION = "sandboxd-guard-v4"
PROXY_MARK = 0x5BD0  # the egress proxy's own connections (runtime/egressproxy/client.py)
REDIRECTED = 0x5BD1  # conntrack mark of a sandbox's connection redirected to the egress proxy
DENIED_FOR = 3600  # seconds a denied destination stays listed
DENIED_LISTED = 256  # at most this many denied destinations listed per sandbox
USAGE_LISTED = 1024  # destinations counted per sandbox (an hour after their last packet)

# Every IPv4 range that is not the public internet: closed to sandboxes unless the operator opens a CIDR.
CLOSED_RANGES = (
    "0.0.0.0/8",        # "this network"
    "10.0.0.0/8",       # private (RFC 1918)
    "100.64.0.0/10",    # carrier-grade NAT shared space (RFC 6598)
    "127.0.0.0/8",      # loopback
    "169.254.0.0/16",   # link-local, cloud metadata services
    "172.16.0.0/12",    # private (RFC 1918)
    "192.0.0.0/24",     # IETF protocol assignments
    "192.0.2.0/24",     # documentation (TEST-NET-1)
    "192.88.99.0/24",   # 6to4 relay anycast (deprecated)
    "192.168.0.0/16",   # private (RFC 1918)
    "198.18.0.0/15",    # benchmarking
    "198.51.100.0/24",  # documentation (TEST-NET-2)
    "203.0.113.0/24",   # documentation (TEST-NET-3)
    "224.0.0.0/4",      # multicast
    "240.0.0.0/4",      # reserved, and the limited broadcast address
)

BASE_RULESET = f"""
table inet {TABLE} {{
  comment "{RULESET_VERSION}"
  set closed {{
    type ipv4_addr; flags interval;
    elements = {{ {", ".join(CLOSED_RANGES)} }}
  }}
  set opened {{
    type ipv4_addr; flags interval; auto-merge;
  }}
  set resolvers {{
    type ipv4_addr;
  }}
  chain input {{
    type filter hook input priority filter - 10; policy accept;
    iifname "vh*" ct mark {REDIRECTED:#x} accept
    iifname "vh*" drop
  }}
  chain proxied {{
    type filter hook output priority filter - 20; policy accept;
    meta mark != {PROXY_MARK:#x} accept
    meta nfproto ipv6 drop
    fib daddr type local reject with icmpx type admin-prohibited
    ip daddr {SUBNET} reject with icmpx type admin-prohibited
    ip daddr @opened accept
    ip daddr @closed reject with icmpx type admin-prohibited
  }}
  chain floor {{
    type filter hook forward priority filter - 20; policy accept;
    iifname "vh*" oifname "vh*" drop
    iifname "vh*" ip saddr != {SUBNET} drop
    iifname "vh*" meta nfproto ipv6 drop
    iifname "vh*" ip daddr @resolvers meta l4proto {{ tcp, udp }} th dport 53 accept
    iifname "vh*" ip daddr @opened accept
    iifname "vh*" ip daddr @closed reject with icmpx type admin-prohibited
    oifname "vh*" ct state established,related accept
    oifname "vh*" drop
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {SUBNET} oifname != "vh*" masquerade
  }}
}}
"""


# The per-sandbox egress hook, added to the table as it is (idempotent): a host upgraded to it keeps its
# table, so running sandboxes keep their floor and their rules.
EGRESS_HOOK = f"""add map inet {TABLE} egress {{ type ifname : verdict; }}
add chain inet {TABLE} egress_rules {{ type filter hook forward priority filter; policy accept; }}
flush chain inet {TABLE} egress_rules
add rule inet {TABLE} egress_rules iifname vmap @egress
add map inet {TABLE} egress_nat {{ type ifname : verdict; }}
add chain inet {TABLE} egress_redirect {{ type nat hook prerouting priority dstnat; policy accept; }}
flush chain inet {TABLE} egress_redirect
add rule inet {TABLE} egress_redirect iifname vmap @egress_nat
"""


RESOLVED_UPSTREAM = Path("/run/systemd/resolve/resolv.conf")


def host_resolvers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    """The IPv4 resolvers sandboxes are given (loopback ones are replaced, so they are never opened)."""
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        words = line.split()
        if len(words) < 2 or words[0] != "nameserver":
            continue
        try:
            ip = ipaddress.ip_address(words[1])
        except ValueError:
            continue
        if ip.version == 4 and not ip.is_loopback and str(ip) not in found:
            found.append(str(ip))
    return found


def sandbox_resolvers(resolv_conf: Path = Path("/etc/resolv.conf"), upstream: Path = RESOLVED_UPSTREAM) -> list[str]:
    """The resolvers a sandbox's /etc/resolv.conf names: the host's, or, on a host whose resolv.conf names
    only a local stub (systemd-resolved's 127.0.0.53), the stub's upstream servers. None found: none; a
    sandbox never gets a resolver the operator did not configure."""
    return host_resolvers(resolv_conf) or host_resolvers(upstream)


def resolv_conf() -> str:
    return "".join(f"nameserver {s}\n" for s in sandbox_resolvers())


def veth_counters(veth: str) -> tuple[int, int]:
    """(bytes the sandbox sent, bytes it received): host-side counters are mirrored."""
    base = Path("/sys/class/net") / veth / "statistics"
    try:
        return int((base / "tx_bytes").read_text()), int((base / "rx_bytes").read_text())
    except (OSError, ValueError):
        return 0, 0


def _run(argv: list[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, input=stdin.encode() if stdin else None, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeFailure(f"{argv[0]} failed: {exc}", details={"argv": argv}) from exc
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise RuntimeFailure(f"{' '.join(argv[:3])} failed: {err}", details={"argv": argv, "stderr": err})
    return proc


def floor_script(opened: list[ipaddress.IPv4Network], resolvers: list[str]) -> str:
    """nft commands that set the floor's two sets to exactly these elements."""
    lines = []
    for name, elements in (("opened", [str(n) for n in opened]), ("resolvers", resolvers)):
        lines.append(f"flush set inet {TABLE} {name}")
        if elements:
            lines.append(f"add element inet {TABLE} {name} {{ {', '.join(elements)} }}")
    return "\n".join(lines) + "\n"


def ensure_table(opened: list[ipaddress.IPv4Network] | None = None, resolvers: list[str] | None = None) -> None:
    """Install our nft table if it is missing or outdated, and set the floor's openings, in one nft
    transaction: no packet ever sees a half-written floor."""
    have = _run(["nft", "list", "table", "inet", TABLE], check=False)
    script = ""
    if have.returncode != 0 or RULESET_VERSION not in have.stdout.decode():
        script = (f"add table inet {TABLE}\ndelete table inet {TABLE}\n" if have.returncode == 0 else "") + BASE_RULESET
    script += EGRESS_HOOK + floor_script(opened or [], sandbox_resolvers() if resolvers is None else resolvers)
    _run(["nft", "-f", "-"], stdin=script)


def floor_openings() -> list[str]:
    """The CIDRs the installed floor lets through (what the last start of a sandboxd process opened)."""
    return _set_elements(json.loads(_run(["nft", "-j", "list", "set", "inet", TABLE, "opened"]).stdout.decode()))


def _egress_objects(veth: str) -> str:
    """nft commands that make the sandbox's chains, sets and counter if missing (each `add` is idempotent)."""
    t = f"inet {TABLE}"
    counted = f"type ipv4_addr; flags dynamic,timeout; timeout {DENIED_FOR}s; size {USAGE_LISTED}; counter;"
    return (f"add chain {t} e_{veth}\n"
            f"add chain {t} n_{veth}\n"
            f"add set {t} ea_{veth} {{ type ipv4_addr; flags interval; auto-merge; }}\n"
            f"add set {t} ed_{veth} {{ type ipv4_addr; flags interval; auto-merge; }}\n"
            f"add set {t} et_{veth} {{ type ipv4_addr; flags dynamic,timeout; timeout {DENIED_FOR}s; "
            f"size {DENIED_LISTED}; }}\n"
            f"add set {t} en_{veth} {{ {counted} }}\n"
            f"add set {t} eb_{veth} {{ {counted} }}\n"
            f"add counter {t} ec_{veth}\n")


def egress_script(veth: str, allow: list[str], deny: list[str], redirect: tuple[int, int] | None = None,
                  tunnel: bool = False) -> str:
    """nft commands that give the sandbox behind veth exactly these rules (its counters and denied list are
    kept), with the hooks that lead to them. A dynamic set's update that fails (the set is full) ends its rule
    there, so each update stands in a rule of its own, apart from the accept or reject it must never skip.

    `redirect` (dns port, tcp port): the sandbox's policy names hosts, so its DNS goes to our resolver and
    the TCP that no allow entry lets through goes to the egress proxy, which admits it by name (or, without
    one, by the same IP rules). What the floor closes is left to the floor, so it fails as fast as before.
    `tunnel`: the sandbox's TCP goes out through a SOCKS5 proxy of its owner's, so all of it goes to the egress
    proxy, the allowed addresses too."""
    t = f"inet {TABLE}"
    lines = [(EGRESS_HOOK + _egress_objects(veth)).rstrip("\n"), f"flush chain {t} e_{veth}",
             f"flush chain {t} n_{veth}", f"flush set {t} ea_{veth}", f"flush set {t} ed_{veth}"]
    for name, cidrs in ((f"ea_{veth}", allow), (f"ed_{veth}", deny)):
        if cidrs:
            lines.append(f"add element {t} {name} {{ {', '.join(cidrs)} }}")
    denied = f"ip daddr @ed_{veth} ip daddr != @ea_{veth}"  # an allow entry wins over a deny entry
    lines += [f"add rule {t} e_{veth} {denied} update @et_{veth} {{ ip daddr }}",
              f"add rule {t} e_{veth} {denied} counter name ec_{veth} reject with icmpx type admin-prohibited",
              f"add rule {t} e_{veth} ct state new update @en_{veth} {{ ip daddr }}",
              f"add rule {t} e_{veth} update @eb_{veth} {{ ip daddr }}",
              f'add element {t} egress {{ "{veth}" : jump e_{veth} }}']
    if redirect is None:
        lines.insert(1, f'add element {t} egress_nat {{ "{veth}" : jump n_{veth} }}')  # so the delete finds it
        lines.append(f'delete element {t} egress_nat {{ "{veth}" }}')
    else:
        dns, tcp = redirect
        to = f"ct mark set {REDIRECTED:#x} redirect to"  # the input chain lets in only what we redirected
        lines += [f"add rule {t} n_{veth} meta l4proto {{ tcp, udp }} th dport 53 {to} :{dns}"]
        if not tunnel:
            lines.append(f"add rule {t} n_{veth} ip daddr @ea_{veth} return")
        lines += [f"add rule {t} n_{veth} ip daddr @opened meta l4proto tcp {to} :{tcp}",
                  f"add rule {t} n_{veth} ip daddr @closed return",
                  f"add rule {t} n_{veth} meta l4proto tcp {to} :{tcp}",
                  f'add element {t} egress_nat {{ "{veth}" : jump n_{veth} }}']
    return "\n".join(lines) + "\n"


def set_egress(veth: str, allow: list[str], deny: list[str], redirect: tuple[int, int] | None = None,
               tunnel: bool = False) -> None:
    """Give the sandbox behind veth these rules, in one transaction."""
    _run(["nft", "-f", "-"], stdin=egress_script(veth, [str(ipaddress.IPv4Network(c)) for c in allow],
                                                 [str(ipaddress.IPv4Network(c)) for c in deny], redirect, tunnel))


def drop_egress(veth: str) -> None:
    """Remove the sandbox's rules, counters and list (made first, so removing what was never made works)."""
    t = f"inet {TABLE}"
    script = (EGRESS_HOOK + _egress_objects(veth) + f'add element {t} egress {{ "{veth}" : jump e_{veth} }}\n'
              f'add element {t} egress_nat {{ "{veth}" : jump n_{veth} }}\n'
              f'delete element {t} egress {{ "{veth}" }}\ndelete element {t} egress_nat {{ "{veth}" }}\n'
              f"flush chain {t} e_{veth}\ndelete chain {t} e_{veth}\n"
              f"flush chain {t} n_{veth}\ndelete chain {t} n_{veth}\n"
              + "".join(f"delete set {t} {p}_{veth}\n" for p in ("ea", "ed", "et", "en", "eb"))
              + f"delete counter {t} ec_{veth}\n")
    _run(["nft", "-f", "-"], stdin=script, check=False)


def egress_usage(veth: str) -> dict[str, tuple[int, int]]:
    """Per destination address the sandbox sent to directly (not through the egress proxy) in the last hour:
    (connections opened, bytes sent). Empty when it has no rules."""
    found: dict[str, list[int]] = {}
    for i, name in enumerate(("en", "eb")):
        proc = _run(["nft", "-j", "list", "set", "inet", TABLE, f"{name}_{veth}"], check=False)
        if proc.returncode != 0:
            return {}
        for item in json.loads(proc.stdout.decode())["nftables"]:
            for element in (item.get("set") or {}).get("elem", []):
                inner = element.get("elem", {}) if isinstance(element, dict) else {}
                addr, counter = inner.get("val"), inner.get("counter") or {}
                if isinstance(addr, str):
                    found.setdefault(addr, [0, 0])[i] = int(counter.get("packets" if i == 0 else "bytes", 0))
    return {a: (c, b) for a, (c, b) in found.items()}


def _set_elements(doc: dict) -> list[str]:
    found = []
    for item in doc["nftables"]:
        for element in (item.get("set") or {}).get("elem", []):
            element = element.get("elem", {}).get("val", element) if isinstance(element, dict) else element
            if isinstance(element, str):
                found.append(f"{element}/32")
            elif "prefix" in element:
                found.append(f"{element['prefix']['addr']}/{element['prefix']['len']}")
            elif "range" in element:
                found.extend(str(n) for n in ipaddress.summarize_address_range(
                    *(ipaddress.IPv4Address(a) for a in element["range"])))
    return found


def egress_rules(veth: str) -> tuple[list[str], list[str]] | None:
    """(allow, deny) as the kernel holds them for the sandbox behind veth; None when it has no rules."""
    got = []
    for name in ("ea", "ed"):
        proc = _run(["nft", "-j", "list", "set", "inet", TABLE, f"{name}_{veth}"], check=False)
        if proc.returncode != 0:
            return None
        got.append(_set_elements(json.loads(proc.stdout.decode())))
    return got[0], got[1]


def egress_denied(veth: str) -> tuple[int, int, list[str]]:
    """(packets, bytes, destinations listed) the sandbox's rules refused; zeros when it has no rules."""
    proc = _run(["nft", "-j", "list", "counter", "inet", TABLE, f"ec_{veth}"], check=False)
    if proc.returncode != 0:
        return 0, 0, []
    counter = next(i["counter"] for i in json.loads(proc.stdout.decode())["nftables"] if "counter" in i)
    listed = _run(["nft", "-j", "list", "set", "inet", TABLE, f"et_{veth}"]).stdout.decode()
    return counter["packets"], counter["bytes"], [c.removesuffix("/32") for c in _set_elements(json.loads(listed))]


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


def link_exists(name: str) -> bool:
    """Whether this process's network namespace has a link of that name. Not /sys/class/net: sysfs shows the
    namespace of whoever mounted it, which is not ours when the server runs in a namespace of its own."""
    try:
        socket.if_nametoindex(name)
        return True
    except OSError:
        return False


def destroy(net: SandboxNet, egress: bool = True) -> None:
    """Delete the veth (its peer goes with it), its egress rules and the netns. Idempotent. `egress=False`: the
    sandbox never had rules of its own, so nft is not run (a process spawn on every kill)."""
    if net.veth and link_exists(net.veth):
        _run(["ip", "link", "del", net.veth], check=False)
    if net.veth and egress:
        drop_egress(net.veth)
    if net.netns_path.exists():
        _run(["ip", "netns", "del", net.netns], check=False)


def leftovers(sandbox_id: str) -> list[str]:
    netns, veth = names(sandbox_id)
    found = []
    if (NETNS_DIR / netns).exists():
        found.append(f"netns {netns}")
    if link_exists(veth):
        found.append(f"veth {veth}")
    if egress_rules(veth) is not None:
        found.append(f"egress rules e_{veth}")
    return found
