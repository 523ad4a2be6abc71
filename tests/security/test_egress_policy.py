"""A sandbox's own egress policy (docs/network.md), on real sandboxes: an allow-list over deny-all, one
address denied, a policy replaced at runtime, the operator's floor under every rule, the denied count, and
the official E2B SDK's `network=` and `update_network` against our server.

The "internet" is one this test makes: a network namespace behind a veth pair, holding 203.0.113.80 and
203.0.113.81 (what the floor lets through here: the suite's SANDBOXD_EGRESS_ALLOW_CIDRS holds .80, this
module opens .81 too) and, on the link, a 198.51.100.x address the floor keeps closed. Those addresses are
routed by the host only into that namespace (checked before anything is sent), and the namespace has no
default route: nothing leaves this machine.
"""
from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shlex
import shutil
import tempfile
from pathlib import Path

import pytest

from probes import connect
from testnet import OwnNet, routes_matching
from support.runtime import spec
from support.server import CPServer
from sandboxd.runtime import network
from sandboxd.runtime.base import Egress
from sandboxd.runtime.hostsetup import prepare_host

pytestmark = pytest.mark.real
PORT = 8000
OPEN_A, OPEN_B = "203.0.113.80", "203.0.113.81"
TEMPLATES = os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates")

SERVER = """
import http.server, sys
log = open(sys.argv[1], "a", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        here = self.connection.getsockname()[0]
        log.write(here + "\\n")
        body = here.encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[2])), H)
print("ready", flush=True)
srv.serve_forever()
"""

GET = """
import errno, json, socket
s = socket.socket(); s.settimeout(5)
try:
    s.connect(({addr!r}, {port})); s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    r = data.split(b"\\r\\n\\r\\n", 1)[1].decode()
except socket.timeout:
    r = "timeout"
except OSError as e:
    r = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(r))
"""


class Internet(OwnNet):
    """An HTTP server on every address of the namespace, logging the address each request came to."""

    def __init__(self):
        for _ in range(20):
            n = secrets.randbelow(60) + 1
            self.host_end, self.link = f"198.51.100.{4 * n + 1}", f"198.51.100.{4 * n + 2}"
            if not any(routes_matching(a) for a in (self.host_end, self.link, OPEN_A, OPEN_B)):
                break
        else:
            pytest.skip("no free test addresses on this host")
        super().__init__("sbxnet", "vn", "sec-egress-policy-")
        try:
            self.make(f"addr add {self.host_end}/30 dev {self.veth}\nlink set {self.veth} up\n"
                      f"route add {OPEN_A}/32 via {self.link} dev {self.veth}\n"
                      f"route add {OPEN_B}/32 via {self.link} dev {self.veth}\n",
                      f"link set lo up\naddr add {self.link}/30 dev peer0\n"
                      f"addr add {OPEN_A}/32 dev peer0\naddr add {OPEN_B}/32 dev peer0\nlink set peer0 up\n",
                      (self.link, OPEN_A, OPEN_B))
            self.serve(SERVER, str(PORT))
        except BaseException:
            self.close()
            raise

    def served(self) -> list[str]:
        return self.logged()


@pytest.fixture(scope="module")
def internet():
    net = Internet()
    try:
        yield net
    finally:
        net.close()


@pytest.fixture
def floor(rt_env):
    """The floor as the suite's setting leaves it plus OPEN_B (so two addresses are open to compare); the
    openings found are put back after. Per test: the floor is the host's, and any sandboxd start resets it."""
    settings, _, _ = rt_env
    prepare_host(settings, backend="crun")  # what the backend's first create does: it must not undo ours later
    before = network.parse_cidrs(",".join(network.floor_openings()))
    network.ensure_table(before + network.parse_cidrs(f"{OPEN_A}/32,{OPEN_B}/32"))
    yield
    network.ensure_table(before)


def floor_open() -> None:
    """Both addresses are still open in the floor: a refusal seen meanwhile was the policy's, not the floor's."""
    opened = [ipaddress.ip_network(c) for c in network.floor_openings()]
    for addr in (OPEN_A, OPEN_B):
        assert any(ipaddress.ip_address(addr) in n for n in opened), \
            f"another sandboxd start on this host closed {addr} in the floor during the test: run it again"


def get(sb, box_id: str, addr: str) -> str:
    """What the sandbox's HTTP GET of addr answered: the address served, or the errno of the connect."""
    r = sb.py(box_id, GET.format(addr=addr, port=PORT))
    assert r.exit_code == 0, r.stderr
    floor_open()
    return json.loads(r.stdout)


def test_an_allow_list_over_deny_all_lets_only_the_allowed_through(rt_env, internet, floor):
    _, sb, image = rt_env
    box = sb.create(spec(image, "allow", internet_access=True,
                         egress=Egress(allow=(OPEN_A,), deny=("0.0.0.0/0",))))
    seen = len(internet.served())
    assert get(sb, box.id, OPEN_A) == OPEN_A
    assert get(sb, box.id, OPEN_B) == "EHOSTUNREACH"  # refused at once, never reached
    assert internet.served()[seen:] == [OPEN_A]
    denied = sb.egress_denied(box.id)
    assert denied.packets >= 1 and denied.destinations == (OPEN_B,)
    sb.destroy(box.id)


def test_one_address_denied_and_the_policy_replaced_for_new_connections(rt_env, internet, floor):
    _, sb, image = rt_env
    box = sb.create(spec(image, "update", internet_access=True))
    seen = len(internet.served())
    assert (get(sb, box.id, OPEN_A), get(sb, box.id, OPEN_B)) == (OPEN_A, OPEN_B)  # no rules: the floor only

    sb.set_egress(box.id, Egress(deny=(OPEN_B,)))
    assert (get(sb, box.id, OPEN_A), get(sb, box.id, OPEN_B)) == (OPEN_A, "EHOSTUNREACH")
    # Replaced, not merged: the old denial is gone the moment the new policy is set.
    sb.set_egress(box.id, Egress(allow=(OPEN_B,), deny=("203.0.113.0/24",)))
    assert (get(sb, box.id, OPEN_A), get(sb, box.id, OPEN_B)) == ("EHOSTUNREACH", OPEN_B)
    sb.set_egress(box.id, Egress())
    assert (get(sb, box.id, OPEN_A), get(sb, box.id, OPEN_B)) == (OPEN_A, OPEN_B)
    assert internet.served()[seen:] == [OPEN_A, OPEN_B, OPEN_A, OPEN_B, OPEN_A, OPEN_B]
    denied = sb.egress_denied(box.id)  # counted across the replacements
    assert denied.packets >= 2 and set(denied.destinations) == {OPEN_A, OPEN_B}
    sb.destroy(box.id)


def test_the_floor_stays_under_every_rule(rt_env, internet, floor):
    """An allow entry naming a range the operator closed opens nothing: the floor refuses first."""
    _, sb, image = rt_env
    box = sb.create(spec(image, "floor", internet_access=True,
                         egress=Egress(allow=("198.51.100.0/24", "0.0.0.0/0", "10.0.0.0/8"), deny=("0.0.0.0/0",))))
    seen = len(internet.served())
    r = sb.py(box.id, connect(internet.link, PORT, 5.0))
    assert json.loads(r.stdout) == "EHOSTUNREACH"
    assert get(sb, box.id, OPEN_A) == OPEN_A  # the allow-all entry does let through what the floor does
    assert internet.served()[seen:] == [OPEN_A]
    sb.destroy(box.id)


def test_the_e2b_sdk_sets_and_replaces_the_policy(internet):
    """Sandbox.create(network=...), get_info().network, update_network(...), against our server; the HopX
    route shows what was denied."""
    data = Path(tempfile.mkdtemp(prefix="sec-egress-policy-", dir="/tmp"))
    data.chmod(0o755)
    before = network.parse_cidrs(",".join(network.floor_openings()))
    srv = CPServer(data, None, SANDBOXD_BACKEND="crun", SANDBOXD_TEMPLATES_PATH=TEMPLATES,
                   SANDBOXD_EGRESS_ALLOW_CIDRS=f"{OPEN_A}/32,{OPEN_B}/32").start()
    try:
        with srv.e2b_env():
            from e2b import ALL_TRAFFIC, Sandbox

            box = Sandbox.create("base", allow_internet_access=True,
                                 network={"allow_out": [OPEN_A], "deny_out": [ALL_TRAFFIC]})
            try:
                def fetch(addr: str) -> str:
                    r = box.commands.run(f"python3 -c {shlex.quote(GET.format(addr=addr, port=PORT))}")
                    floor_open()
                    return json.loads(r.stdout)

                info = box.get_info().network
                assert info is not None and info["allow_out"] == [OPEN_A] and info["deny_out"] == [ALL_TRAFFIC]
                seen = len(internet.served())
                assert (fetch(OPEN_A), fetch(OPEN_B)) == (OPEN_A, "EHOSTUNREACH")

                box.update_network({"deny_out": [OPEN_A]})  # replaces: the allow-list is gone
                assert (fetch(OPEN_A), fetch(OPEN_B)) == ("EHOSTUNREACH", OPEN_B)
                info = box.get_info().network
                assert info is not None and info["allow_out"] == [] and info["deny_out"] == [OPEN_A]
                assert internet.served()[seen:] == [OPEN_A, OPEN_B]

                with srv.client() as c:
                    doc = c.get(f"/v1/sandboxes/{box.sandbox_id}/network").json()
                    assert doc["deny_out"] == [OPEN_A] and doc["denied"]["packets"] >= 2
                    assert set(doc["denied"]["destinations"]) == {OPEN_A, OPEN_B}
                    events = c.get(f"/events/sandboxes/{box.sandbox_id}").json()
                updates = [e["eventData"] for e in events if e["type"] == "sandbox.lifecycle.updated"]
                assert {"allow_out": [], "deny_out": [OPEN_A], "dns_servers": None} in [u.get("network") for u in updates]
            finally:
                box.kill()
    finally:
        srv.close()
        shutil.rmtree(data, ignore_errors=True)
        network.ensure_table(before)
