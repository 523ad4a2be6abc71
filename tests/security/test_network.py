"""Network isolation: no sandbox reaches a host service (whatever address it binds) or another sandbox.

Reachability is only ever tested against this machine's own addresses.
"""
from __future__ import annotations

import json
import socket
import subprocess
import threading
import time

import pytest

from probes import connect
from support.runtime import spec

pytestmark = pytest.mark.real


class Listener:
    """A host TCP listener that records every connection it accepts."""

    def __init__(self, host: str, port: int = 0):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self):
        self.sock.close()


def host_addresses() -> list[str]:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True).stdout
    return [line.split()[3].split("/")[0] for line in out.splitlines() if not line.split()[1].startswith("vh")]


@pytest.fixture(scope="module")
def listeners():
    ls = {"loopback": Listener("127.0.0.1"), "any": Listener("0.0.0.0")}
    for port in (8080, 8081):  # the platform's own ports, when nothing else holds them
        try:
            ls[f"platform{port}"] = Listener("0.0.0.0", port)
        except OSError:
            pass
    yield ls
    for l in ls.values():
        l.close()


@pytest.fixture(scope="module")
def boxes(rt_env):
    _, sb, image = rt_env
    iso = sb.create(spec(image, "iso"))
    a = sb.create(spec(image, "neta", internet_access=True))
    b = sb.create(spec(image, "netb", internet_access=True))
    return iso, a, b


def probe(sb, box_id, host, port, timeout=2.0):
    r = sb.py(box_id, connect(host, port, timeout))
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def test_without_internet_only_loopback_exists(rt_env, boxes, listeners):
    _, sb, _ = rt_env
    iso = boxes[0]
    links = sb.exec(iso.id, ["ip", "-o", "link"]).stdout.decode().splitlines()
    assert [l.split(":")[1].strip() for l in links] == ["lo"]
    # 127.0.0.1 is the sandbox's own loopback: the host's loopback service is not there
    assert probe(sb, iso.id, "127.0.0.1", listeners["loopback"].port) == "ECONNREFUSED"
    for addr in host_addresses():
        for l in listeners.values():
            assert probe(sb, iso.id, addr, l.port) == "ENETUNREACH"
    assert all(l.accepted == 0 for l in listeners.values())


def test_with_internet_host_services_are_dropped(rt_env, boxes, listeners):
    _, sb, _ = rt_env
    a = boxes[1]
    net = sb.backend._record(a.id).net
    assert net["veth"].startswith("vh")
    routes = sb.exec(a.id, ["ip", "route"]).stdout.decode()
    assert f"default via {net['host_ip']}" in routes
    assert probe(sb, a.id, "127.0.0.1", listeners["loopback"].port) == "ECONNREFUSED"
    for addr in host_addresses() + [net["host_ip"]]:
        for name, l in listeners.items():
            assert probe(sb, a.id, addr, l.port, 1.0) == "timeout", (addr, name)
    # the host's loopback-bound service through the veth address: dropped too (never answered)
    assert probe(sb, a.id, net["host_ip"], listeners["loopback"].port, 1.0) == "timeout"
    assert all(l.accepted == 0 for l in listeners.values())
    # and the guard is what stops it: the host can still reach its own services
    with socket.create_connection(("127.0.0.1", listeners["any"].port), 2):
        pass


def test_sandboxes_cannot_reach_each_other(rt_env, boxes):
    _, sb, _ = rt_env
    iso, a, b = boxes
    b_ip = sb.backend._record(b.id).net["sandbox_ip"]
    sb.sh(b.id, "nohup python3 -m http.server 8000 --bind 0.0.0.0 >/dev/null 2>&1 &")
    deadline = time.monotonic() + 10
    while probe(sb, b.id, b_ip, 8000) != "connected":  # it is up and reachable from inside b
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert probe(sb, a.id, b_ip, 8000) == "timeout"
    assert probe(sb, iso.id, b_ip, 8000) == "ENETUNREACH"
