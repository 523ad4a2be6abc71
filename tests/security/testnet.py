"""A network of a test's own: a network namespace behind a veth pair (never named vh*: that prefix is the
sandboxes'), addresses the host routes only into it, and a Python server in it writing to a log."""
from __future__ import annotations

import ipaddress
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def sh(*argv: str, stdin: str | None = None) -> str:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True).stdout


def routes_matching(addr: str) -> list[str]:
    """The host's routes (and its own addresses) that cover addr, other than the default route."""
    found = [r["dst"] for r in json.loads(sh("ip", "-j", "-4", "route", "show", "match", addr))
             if r["dst"] != "default"]
    for link in json.loads(sh("ip", "-j", "-4", "addr", "show")):
        for a in link.get("addr_info", []):
            if ipaddress.ip_address(addr) in ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False):
                found.append(f"{a['local']}/{a['prefixlen']} on {link['ifname']}")
    return found


class OwnNet:
    """The namespace and veth (`make`), the server (`serve`), and `close` for all of it."""

    def __init__(self, ns_prefix: str, veth_prefix: str, dir_prefix: str):
        tag = secrets.token_hex(3)
        self.ns, self.veth = f"{ns_prefix}-{tag}", f"{veth_prefix}{tag}"
        self.dir = Path(tempfile.mkdtemp(prefix=dir_prefix))
        self.log = self.dir / "log"
        self.log.touch()
        self.proc: subprocess.Popen | None = None

    def make(self, host_cmds: str, ns_cmds: str, reached: tuple[str, ...]) -> None:
        """The pair, `ip -b` commands on each side, then the check that the host reaches each address in
        `reached` only through our veth, and that the namespace has no way onwards."""
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.veth, "type", "veth", "peer", "name", "peer0", "netns", self.ns)
        Path(f"/proc/sys/net/ipv6/conf/{self.veth}/disable_ipv6").write_text("1")
        sh("ip", "-b", "-", stdin=host_cmds)
        sh("ip", "-n", self.ns, "-b", "-", stdin=ns_cmds)
        for addr in reached:
            route = sh("ip", "route", "get", addr)
            assert f"dev {self.veth}" in route, route
        assert "default" not in sh("ip", "-n", self.ns, "route", "show")

    def serve(self, code: str, *args: str) -> None:
        """Run code in the namespace with the log's path and args; it prints "ready" once it listens."""
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-c", code, str(self.log),
                                      *args], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def logged(self) -> list[str]:
        return self.log.read_text().split()

    def close(self) -> None:
        if self.proc:
            self.proc.kill()
            self.proc.wait()
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
