"""The egress floor: a sandbox with internet access reaches the public internet, never a private network,
unless the operator opened the CIDR. Build sandboxes (template RUN steps) meet the same floor.

The private network is one this test makes: a network namespace behind a veth pair whose far end holds
a 10.x and a 192.168.x address, routed by the host only through that veth (checked before anything is
sent). Nothing leaves this machine.
"""
from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest


from support.server import CPServer
from probes import connect  # noqa: E402
from testnet import OwnNet, routes_matching  # noqa: E402
from support.runtime import spec  # noqa: E402
from sandboxd.config import Settings  # noqa: E402
from sandboxd.runtime import network  # noqa: E402
from sandboxd.runtime.hostsetup import prepare_host  # noqa: E402

pytestmark = pytest.mark.real
TEMPLATES = os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates")
PORT, DNS = 8000, 53  # inside the peer's own namespace: nothing else listens there

LISTENER = """
import socket, sys, threading
log = open(sys.argv[1], "a", buffering=1)
def serve(s):
    while True:
        c, peer = s.accept()
        log.write("%s:%d\\n" % c.getsockname())
        c.close()
for port in sys.argv[2:]:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port))); s.listen(16)
    threading.Thread(target=serve, args=(s,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""


class Peer(OwnNet):
    """A private network of our own: netns + veth, a TCP listener on 10.254.n.2 and 192.168.254.n."""

    def __init__(self):
        for _ in range(20):
            n = secrets.randbelow(200) + 20
            self.net10 = ipaddress.ip_network(f"10.254.{n}.0/30")
            self.host10, self.ip10 = f"10.254.{n}.1", f"10.254.{n}.2"
            self.ip192 = f"192.168.254.{n}"
            if not any(routes_matching(a) for a in (self.host10, self.ip10, self.ip192)):
                break
        else:
            pytest.skip("no free private test addresses on this host")
        super().__init__("sbxtest", "vt", "sec-egress-")
        try:
            self.make(f"addr add {self.host10}/30 dev {self.veth}\nlink set {self.veth} up\n"
                      f"route add {self.ip192}/32 via {self.ip10} dev {self.veth}\n",
                      f"link set lo up\naddr add {self.ip10}/30 dev peer0\n"
                      f"addr add {self.ip192}/32 dev peer0\nlink set peer0 up\n", (self.ip10, self.ip192))
            self.serve(LISTENER, str(PORT), str(DNS))
        except BaseException:
            self.close()
            raise

    def accepted(self) -> list[str]:
        return self.logged()


@pytest.fixture(scope="module")
def peer():
    p = Peer()
    try:
        for addr in (p.ip10, p.ip192):  # the peer answers the host: what stops a sandbox is the floor
            socket.create_connection((addr, PORT), 5).close()
        yield p
    finally:
        p.close()


def start(cidrs: str = "") -> None:
    """What a sandboxd start does to the host's floor, with SANDBOXD_EGRESS_ALLOW_CIDRS=cidrs."""
    data = Path(tempfile.mkdtemp(prefix="sec-egress-", dir="/tmp"))
    try:
        prepare_host(Settings(data_dir=data, backend="crun", egress_allow_cidrs=cidrs), force=True)
    finally:
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def closed_floor():
    """The floor as a default start leaves it (nothing opened); the openings found are put back after."""
    before = network.parse_cidrs(",".join(network.floor_openings()))
    start()
    yield
    network.ensure_table(before)


def wait_accepted(peer: Peer, count: int) -> list[str]:
    deadline = time.monotonic() + 10  # the listener logs a connection just after the client saw it
    while len(peer.accepted()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return peer.accepted()


def probe(sb, box_id: str, addr: str, port: int = PORT) -> str:
    r = sb.py(box_id, connect(addr, port, 5.0))
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def test_private_ranges_are_closed_until_the_operator_opens_one(rt_env, peer, closed_floor):
    _, sb, image = rt_env
    box = sb.create(spec(image, "egress", internet_access=True))
    seen = len(peer.accepted())
    for addr in (peer.ip10, peer.ip192):
        assert probe(sb, box.id, addr) == "EHOSTUNREACH", addr  # refused at once, never reached
    assert len(peer.accepted()) == seen

    # The operator opens the 10.x network (a start with the setting): that network only, for every sandbox.
    try:
        start(str(peer.net10))
        assert network.floor_openings() == [str(peer.net10)]
        assert probe(sb, box.id, peer.ip10) == "connected"
        assert wait_accepted(peer, seen + 1)[seen:] == [f"{peer.ip10}:{PORT}"]
        assert probe(sb, box.id, peer.ip192) == "EHOSTUNREACH"
    finally:
        start()  # a start without it closes it again
    assert network.floor_openings() == []
    assert probe(sb, box.id, peer.ip10) == "EHOSTUNREACH"


def test_a_private_resolver_is_reachable_on_port_53_only(rt_env, peer, closed_floor):
    """The stated DNS exception: the host's resolvers (here our peer, as if /etc/resolv.conf named it)
    answer on port 53, and nothing else at that address is reachable."""
    _, sb, image = rt_env
    box = sb.create(spec(image, "dns", internet_access=True))
    seen = len(peer.accepted())
    try:
        network.ensure_table([], resolvers=[peer.ip10])
        assert probe(sb, box.id, peer.ip10, DNS) == "connected"
        assert wait_accepted(peer, seen + 1)[seen:] == [f"{peer.ip10}:{DNS}"]
        assert probe(sb, box.id, peer.ip10, PORT) == "EHOSTUNREACH"
        assert probe(sb, box.id, peer.ip192, DNS) == "EHOSTUNREACH"
    finally:
        start()  # the host's own resolvers again
    assert probe(sb, box.id, peer.ip10, DNS) == "EHOSTUNREACH"
    assert len(peer.accepted()) == seen + 1


def test_the_floor_is_installed_once_and_idempotently(closed_floor):
    first = network._run(["nft", "list", "table", "inet", network.TABLE]).stdout.decode()
    start()
    again = network._run(["nft", "list", "table", "inet", network.TABLE]).stdout.decode()
    assert first == again
    # The floor's chain once, and the sandboxes' own rules after it (docs/network.md).
    assert again.count("hook forward") == 2 and again.count("chain floor") == 1
    assert again.count("chain egress_rules") == 1
    for cidr in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"):
        assert cidr in again


def build(srv: CPServer, addr: str) -> dict:
    """Run a template build whose RUN step connects to addr; its final status document."""
    code = f"import socket; socket.create_connection(({addr!r}, {PORT}), 5).close()"
    with srv.client() as c:
        r = c.post("/v1/templates/build", json={
            "name": f"sec-egress-{secrets.token_hex(4)}", "from_image": "base", "skipCache": True,
            "steps": [{"type": "RUN", "args": [f"python3 -c {json.dumps(code)}"]}],
            "cpu": 1, "memory": 512, "diskGB": 2})
        assert r.status_code == 202, r.text
        build_id, template_id = r.json()["build_id"], r.json()["template_id"]
        deadline = time.monotonic() + 600
        try:
            while time.monotonic() < deadline:
                doc = c.get(f"/v1/templates/build/{build_id}/status").json()
                if doc["status"] not in ("building", "queued"):
                    doc["logs"] = c.get(f"/v1/templates/build/{build_id}/logs").json()["logs"]
                    return doc
                time.sleep(0.5)
            pytest.fail("the build did not end")
        finally:
            c.delete(f"/v1/templates/{template_id}")


def test_build_steps_meet_the_same_floor(peer, closed_floor):
    """A build's RUN step runs in a build sandbox under the floor of the server that builds. The server
    here opens an unrelated range: it applies its setting at start, and the peer's network stays closed."""
    data = Path(tempfile.mkdtemp(prefix="sec-egress-", dir="/tmp"))
    data.chmod(0o755)
    srv = CPServer(data, None, SANDBOXD_BACKEND="crun", SANDBOXD_TEMPLATES_PATH=TEMPLATES,
                   SANDBOXD_EGRESS_ALLOW_CIDRS="198.51.100.0/24").start()
    seen = len(peer.accepted())
    try:
        assert network.floor_openings() == ["198.51.100.0/24"]
        doc = build(srv, peer.ip10)
    finally:
        srv.close()
        shutil.rmtree(data, ignore_errors=True)
        start()
    # Refused by the floor ("administratively prohibited" reads as no route to host), never reached.
    assert doc["status"] == "failed" and "No route to host" in doc["logs"], doc
    assert peer.accepted()[seen:] == []
