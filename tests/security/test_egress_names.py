"""Host-name egress rules (docs/network.md) on real sandboxes through the official E2B SDK: names and
wildcards admitted by TLS SNI and by HTTP Host, neither a direct connection to an address nor a forged SNI or
Host getting through, names denied, a policy replaced at run time, the floor under every name, headers set
on plain HTTP, and what went out and what was refused counted.

The "internet" is one this test makes: a network namespace behind a veth pair holding 203.0.113.90 and .91
(opened in the floor by the server this module starts), a DNS server at 203.0.113.53 answering a zone of
`.test` names (the server's SANDBOXD_EGRESS_RESOLVERS), HTTP on port 8000 and TLS on 8443 with a certificate
of a CA made here, and a SOCKS5 proxy at 203.0.113.70 (E2B's `egress_proxy`). Those addresses are routed by the host only into that namespace (checked before anything
is sent), and the namespace has no default route: nothing leaves this machine.
"""
from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from probes import connect
from support.server import CPServer
from testnet import OwnNet, routes_matching
from sandboxd.runtime import network

pytestmark = pytest.mark.real
WWW, API, DNS = "203.0.113.90", "203.0.113.91", "203.0.113.53"
SOCKS, DEAD = "203.0.113.70", "203.0.113.71"  # a SOCKS5 proxy, and an address where nothing listens
OURS = (WWW, API, DNS, SOCKS, DEAD)
TEMPLATES = os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates")

SERVERS = r"""
import http.server, json, socketserver, ssl, sys, threading
import dns.message, dns.rcode, dns.rrset, socket
zone = json.loads(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"here": self.connection.getsockname()[0], "host": self.headers.get("Host"),
                           "token": self.headers.get("X-Token")}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
plain = http.server.ThreadingHTTPServer(("0.0.0.0", 8000), H)
tls = http.server.ThreadingHTTPServer(("0.0.0.0", 8443), H)
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH); ctx.load_cert_chain(sys.argv[3], sys.argv[4])
tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
for srv in (plain, tls):
    threading.Thread(target=srv.serve_forever, daemon=True).start()
log = open(sys.argv[1], "a", buffering=1)
class Socks(socketserver.StreamRequestHandler):  # SOCKS5 CONNECT, no authentication; logs where it went
    def handle(self):
        r, w = self.rfile, self.connection
        n = r.read(2)[1]; r.read(n); w.sendall(b"\x05\x00")
        head = r.read(4); host = socket.inet_ntoa(r.read(4)); port = int.from_bytes(r.read(2), "big")
        log.write(f"socks {host}:{port}\n")
        up = socket.create_connection((host, port)); w.sendall(b"\x05\x00\x00\x01" + bytes(6))
        def pump(a, b):
            while data := a.recv(65536):
                b.sendall(data)
            b.shutdown(socket.SHUT_WR)
        t = threading.Thread(target=pump, args=(up, w)); t.start(); pump(w, up); t.join(); up.close()
class SocksServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
threading.Thread(target=SocksServer((sys.argv[6], 1080), Socks).serve_forever, daemon=True).start()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind((sys.argv[5], 53))
print("ready", flush=True)
while True:
    wire, peer = udp.recvfrom(4096)
    q = dns.message.from_wire(wire); r = dns.message.make_response(q); name = q.question[0].name.to_text()
    if name in zone and q.question[0].rdtype == 1:
        r.answer.append(dns.rrset.from_text(name, 30, "IN", "A", zone[name]))
    elif name not in zone:
        r.set_rcode(dns.rcode.NXDOMAIN)
    udp.sendto(r.to_wire(), peer)
"""

# What the sandbox runs: resolve (or take the address given), connect, HTTP GET over plain or TLS with the
# Host/SNI given, and print what happened as one JSON value.
CLIENT = r"""
import json, socket, ssl, sys
name, addr, port, host, tls, ca = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1", sys.argv[6]
try:
    addr = addr or socket.gethostbyname(name)
except OSError as e:
    print(json.dumps({"dns": str(e)})); sys.exit()
try:
    s = socket.create_connection((addr, port), timeout=5)
    if tls:
        s = ssl.create_default_context(cadata=ca).wrap_socket(s, server_hostname=name)
    s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    print(json.dumps({"status": status, "body": json.loads(body) if status == 200 else body.decode()}))
except (OSError, ValueError, IndexError) as e:
    print(json.dumps({"error": type(e).__name__}))
"""


class NameNet(OwnNet):
    def __init__(self):
        for _ in range(20):
            n = secrets.randbelow(60) + 1
            self.host_end, self.link = f"198.51.100.{4 * n + 1}", f"198.51.100.{4 * n + 2}"
            if not any(routes_matching(a) for a in (self.host_end, self.link, WWW, API, DNS, SOCKS, DEAD)):
                break
        else:
            pytest.skip("no free test addresses on this host")
        super().__init__("sbxnames", "vq", "sec-egress-names-")
        self.zone = {"www.open.test.": WWW, "api.open.test.": API, "a.wild.test.": API, "x.y.wild.test.": API,
                     "blocked.test.": API, "inside.test.": self.link}
        try:
            self._certs()
            self.make(f"addr add {self.host_end}/30 dev {self.veth}\nlink set {self.veth} up\n"
                      + "".join(f"route add {a}/32 via {self.link} dev {self.veth}\n" for a in OURS),
                      f"link set lo up\naddr add {self.link}/30 dev peer0\n"
                      + "".join(f"addr add {a}/32 dev peer0\n" for a in OURS) + "link set peer0 up\n",
                      (self.link, *OURS))
            self.serve(SERVERS, json.dumps(self.zone), str(self.dir / "leaf.pem"), str(self.dir / "leaf.key"), DNS,
                       SOCKS)
        except BaseException:
            self.close()
            raise

    def _certs(self) -> None:
        d, ec = self.dir, ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        run = lambda *a: subprocess.run(["openssl", *a], cwd=d, check=True, capture_output=True)  # noqa: E731
        run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=sandboxd test CA")
        run("req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=www.open.test")
        (d / "san").write_text("subjectAltName=DNS:www.open.test,DNS:api.open.test,DNS:*.wild.test\n")
        run("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "leaf.pem", "-days", "2", "-extfile", "san")
        self.ca = (d / "ca.pem").read_text()


@pytest.fixture(scope="module")
def net():
    n = NameNet()
    try:
        yield n
    finally:
        n.close()


@pytest.fixture(scope="module")
def server(net):
    data = Path(tempfile.mkdtemp(prefix="sec-egress-names-", dir="/tmp"))
    data.chmod(0o755)
    before = network.parse_cidrs(",".join(network.floor_openings()))
    srv = CPServer(data, None, SANDBOXD_BACKEND="crun", SANDBOXD_TEMPLATES_PATH=TEMPLATES,
                   SANDBOXD_EGRESS_ALLOW_CIDRS=",".join(f"{a}/32" for a in (WWW, API, SOCKS, DEAD)),
                   SANDBOXD_EGRESS_RESOLVERS=DNS).start()
    try:
        with srv.e2b_env():
            yield srv
    finally:
        srv.close()
        shutil.rmtree(data, ignore_errors=True)
        network.ensure_table(before)


@pytest.fixture
def sandbox(server):
    made = []

    def make(**network_opts):
        from e2b import Sandbox

        box = Sandbox.create("base", allow_internet_access=True, network=network_opts)
        made.append(box)
        return box

    yield make
    for box in made:
        box.kill()


def fetch(box, net: NameNet, name: str, *, addr: str = "", tls: bool = False, host: str | None = None) -> dict:
    """What the sandbox got asking name (at addr, or at what it resolves to) over HTTP or TLS."""
    port = 8443 if tls else 8000
    argv = ["python3", "-c", CLIENT, name, addr, str(port), host or name, "1" if tls else "0", net.ca]
    r = box.commands.run(shlex.join(argv), timeout=30)
    return json.loads(r.stdout)


def served(r: dict) -> str | None:
    """The address that answered, when the request got through."""
    return r["body"]["here"] if r.get("status") == 200 else None


def test_names_over_deny_all_admit_by_sni_and_host_and_nothing_else(server, net, sandbox):
    from e2b import ALL_TRAFFIC

    box = sandbox(allow_out=["www.open.test", "*.wild.test"], deny_out=[ALL_TRAFFIC])
    assert served(fetch(box, net, "www.open.test")) == WWW  # by Host
    assert served(fetch(box, net, "www.open.test", tls=True)) == WWW  # by SNI, the handshake end to end
    assert served(fetch(box, net, "a.wild.test", tls=True)) == API  # a wildcard, one level down
    assert served(fetch(box, net, "x.y.wild.test")) == API  # and two
    # A name the policy does not allow is not even resolved (no data out in DNS queries under deny-all).
    assert "dns" in fetch(box, net, "api.open.test")
    # Not by going to the address directly, with no name or with the address as the name...
    assert fetch(box, net, API, addr=API)["status"] == 403
    assert fetch(box, net, WWW, addr=WWW)["status"] == 403
    # ...nor by carrying an allowed name to an address it does not have.
    forged = fetch(box, net, "www.open.test", addr=API)
    assert forged["status"] == 403 and "name_not_resolved" in forged["body"]
    assert "error" in fetch(box, net, "www.open.test", addr=API, tls=True)
    # UDP other than DNS follows the IP rules: refused under deny-all.
    r = box.commands.run(f"python3 -c {shlex.quote(UDP.format(addr=WWW))}", timeout=30)
    assert json.loads(r.stdout) in ("EHOSTUNREACH", "ECONNREFUSED")  # the reject's ICMP, at once

    with server.client() as c:
        doc = c.get(f"/v1/sandboxes/{box.sandbox_id}/network").json()
        shown = c.get(f"/v1/sandboxes/{box.sandbox_id}").json()["network"]  # HopX's GET of the sandbox
    assert shown["allow_out"] == ["www.open.test", "*.wild.test"] and shown["deny_out"] == [ALL_TRAFFIC]
    usage = {u["destination"]: u for u in doc["usage"]}
    assert usage["www.open.test"]["connections"] == 2 and usage["www.open.test"]["bytes_received"] > 0
    assert usage["a.wild.test"]["connections"] == 1
    reasons = {(r["destination"], r["reason"]) for r in doc["denied"]["refusals"]}
    assert {("api.open.test", "dns_refused"), (API, "ip_denied"), ("www.open.test", "name_not_resolved")} <= reasons
    assert API in doc["denied"]["destinations"]


UDP = """
import errno, json, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
try:
    s.connect(({addr!r}, 9999)); s.send(b"x"); s.recv(10); r = "answered"
except socket.timeout:
    r = "timeout"
except OSError as e:
    r = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(r))
"""


def test_a_denied_name_is_refused_and_the_rest_goes_out(server, net, sandbox):
    box = sandbox(deny_out=["blocked.test"])
    assert "dns" in fetch(box, net, "blocked.test")
    r = fetch(box, net, "blocked.test", addr=API)  # its address, with its name
    assert r["status"] == 403 and "name_denied" in r["body"]
    assert served(fetch(box, net, "api.open.test", tls=True)) == API  # the same address, by another name
    assert served(fetch(box, net, "www.open.test")) == WWW


def test_a_replaced_policy_meets_the_next_connection_and_the_floor_stays(server, net, sandbox):
    from e2b import ALL_TRAFFIC

    box = sandbox(allow_out=["www.open.test", "inside.test"], deny_out=[ALL_TRAFFIC])
    assert served(fetch(box, net, "www.open.test")) == WWW
    # inside.test is allowed by name, but its address is in a range the operator's floor keeps closed.
    inside = fetch(box, net, "inside.test")
    assert "error" in inside or inside.get("status") == 403
    assert served(fetch(box, net, "api.open.test")) is None

    started = time.monotonic()
    box.update_network({"allow_out": ["api.open.test"], "deny_out": [ALL_TRAFFIC]})
    took = time.monotonic() - started
    assert served(fetch(box, net, "api.open.test", tls=True)) == API
    assert fetch(box, net, "www.open.test", addr=WWW)["status"] == 403
    info = box.get_info().network
    assert info is not None and info["allow_out"] == ["api.open.test"], info
    print(f"update_network returned in {took * 1000:.0f} ms")


def test_headers_are_set_on_plain_http_to_their_host_only(server, net, sandbox):
    box = sandbox(allow_out=["www.open.test", "api.open.test"], deny_out=["0.0.0.0/0"],
                  rules={"www.open.test": [{"transform": {"headers": {"X-Token": "kept-on-the-host"}}}]})
    got = fetch(box, net, "www.open.test")
    assert got["status"] == 200 and got["body"]["token"] == "kept-on-the-host"
    assert fetch(box, net, "api.open.test")["body"]["token"] is None
    # Without TLS interception the header cannot be set inside TLS: the connection is refused, not sent bare.
    assert "error" in fetch(box, net, "www.open.test", tls=True)
    info = box.get_info().network
    assert info is not None and info["rules"] == {
        "www.open.test": [{"transform": {"headers": {"X-Token": "kept-on-the-host"}}}]}


def test_names_are_still_enforced_after_the_server_restarts(server, net, sandbox):
    """The proxy dies with its server; the next server adopts the sandbox, starts its own proxy and gives it
    the sandbox's rules before nft sends it anything."""
    from e2b import ALL_TRAFFIC

    box = sandbox(allow_out=["www.open.test"], deny_out=[ALL_TRAFFIC])
    assert served(fetch(box, net, "www.open.test", tls=True)) == WWW
    server.stop(signal.SIGKILL)
    server.start()
    assert served(fetch(box, net, "www.open.test", tls=True)) == WWW
    assert served(fetch(box, net, "www.open.test")) == WWW
    assert fetch(box, net, "www.open.test", addr=API)["status"] == 403
    assert "dns" in fetch(box, net, "api.open.test")


def test_an_egress_proxy_carries_what_the_rules_let_out_and_fails_closed(server, net, sandbox):
    from e2b import ALL_TRAFFIC

    box = sandbox(allow_out=["www.open.test"], deny_out=[ALL_TRAFFIC], egress_proxy={"address": f"{SOCKS}:1080"})
    seen = len(net.logged())
    assert served(fetch(box, net, "www.open.test", tls=True)) == WWW
    assert served(fetch(box, net, "www.open.test")) == WWW
    assert fetch(box, net, API, addr=API)["status"] == 403  # the rules first: never handed to the proxy
    assert [line for line in net.logged()[seen:]] == ["socks", f"{WWW}:8443", "socks", f"{WWW}:8000"]
    info = box.get_info().network
    assert info is not None and info["egress_proxy"] == {"address": f"{SOCKS}:1080"}, info

    box.update_network({"allow_out": ["www.open.test"], "deny_out": [ALL_TRAFFIC],
                        "egress_proxy": {"address": f"{DEAD}:1080"}})
    seen = len(net.logged())
    assert "error" in fetch(box, net, "www.open.test")  # the proxy cannot be reached: nothing goes out directly
    assert net.logged()[seen:] == []
    with server.client() as c:
        doc = c.get(f"/v1/sandboxes/{box.sandbox_id}/network").json()
    assert doc["egress_proxy"] == {"address": f"{DEAD}:1080"} and "password" not in str(doc)
    assert doc["denied"]["refusals"][-1]["reason"] in ("connect_failed", "tunnel_failed")


GATEWAY = """
import socket, struct
for line in open("/proc/net/route").read().splitlines()[1:]:
    f = line.split()
    if f[1] == "00000000":
        print(socket.inet_ntoa(struct.pack("<L", int(f[2], 16))))
"""


def test_the_egress_proxy_is_out_of_the_sandboxs_own_reach(server, net, sandbox):
    """The proxy listens on the host: a sandbox reaches it only through the redirect of its own traffic. Its
    ports on the sandbox's gateway address (the host's end of its veth) are dropped like any host service."""
    from e2b import ALL_TRAFFIC

    box = sandbox(allow_out=["www.open.test"], deny_out=[ALL_TRAFFIC])
    assert served(fetch(box, net, "www.open.test")) == WWW
    proxy = next(p for p in psutil.Process(server.proc.pid).children()
                 if "sandboxd.runtime.egressproxy" in " ".join(p.cmdline()))
    ports = sorted({c.laddr.port for c in proxy.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN})
    gateway = box.commands.run(f"python3 -c {shlex.quote(GATEWAY)}").stdout.strip()
    assert gateway.startswith("10.213.") and len(ports) == 2  # the resolver's TCP side and the proxy
    for port in ports:
        r = box.commands.run(f"python3 -c {shlex.quote(connect(gateway, port, 2.0))}")
        assert json.loads(r.stdout) == "timeout", (port, r.stdout)
