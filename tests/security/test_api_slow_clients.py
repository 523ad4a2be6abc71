"""The control-plane API against clients that hold connections without finishing a request.

A real `sandboxd serve` (fake backend) on loopback with tiny limits: clients that trickle a request head
are closed by the head deadline while others are still answered, and connections over the per-address or
global cap get a 503 in the API's error shape. The only time bounds are generous ones ("closed within").
"""
from __future__ import annotations

import json
import select
import socket
import time

import httpx
import pytest


from support.server import CPServer

GENEROUS = 30.0  # seconds a refused connection may take to close; the deadline under test is 1 s


def serve(tmp_path, **env: str) -> CPServer:
    return CPServer(tmp_path, **{f"SANDBOXD_{k.upper()}": v for k, v in env.items()}).start()


def connect(srv: CPServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=5)


def closed(sock: socket.socket) -> bool:
    """Whether the server closed its side (an answer before the close is read and dropped)."""
    try:
        while True:
            ready, _, _ = select.select([sock], [], [], 0)
            if not ready:
                return False
            if not sock.recv(65536):
                return True
    except OSError:
        return True


@pytest.fixture
def slow_server(tmp_path):
    srv = serve(tmp_path, api_head_timeout_seconds="1", api_keep_alive_seconds="1")
    yield srv
    srv.close()


def test_clients_that_trickle_a_head_are_closed_and_others_still_answered(slow_server):
    socks = [connect(slow_server) for _ in range(12)]
    try:
        for s in socks:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        open_ = set(range(len(socks)))
        deadline = time.monotonic() + GENEROUS
        with httpx.Client(base_url=slow_server.base, timeout=10) as c:
            while open_ and time.monotonic() < deadline:
                for i in list(open_):
                    try:
                        socks[i].sendall(b"X")  # one byte of a header name: the head never ends
                    except OSError:
                        open_.discard(i)
                        continue
                    if closed(socks[i]):
                        open_.discard(i)
                assert c.get("/health").status_code == 200  # a normal client is answered meanwhile
                time.sleep(0.2)
        assert not open_, f"{len(open_)} of 12 slow connections still open after {GENEROUS} s"
    finally:
        for s in socks:
            s.close()


def test_an_idle_connection_is_closed_and_a_silent_one_too(slow_server):
    with connect(slow_server) as idle, connect(slow_server) as silent:
        idle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + GENEROUS
        while not (closed(idle) and closed(silent)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert closed(idle) and closed(silent)


def _request(sock: socket.socket) -> tuple[int, dict]:
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body) if body.startswith(b"{") else {}


@pytest.mark.parametrize("cap", ["api_max_connections_per_ip", "api_max_connections"])
def test_connections_over_the_cap_get_a_503(tmp_path, cap):
    srv = serve(tmp_path, api_head_timeout_seconds="120", **{cap: "4"})
    held = []
    try:
        time.sleep(0.5)  # the start-up health probe's connection is gone
        held = [connect(srv) for _ in range(4)]
        with connect(srv) as extra:
            status, body = _request(extra)
        assert status == 503
        assert body["code"] in ("too_many_connections", "too_many_connections_from_address")
        assert body["error"]["details"]["limit"] == 4
        for s in held:
            s.close()
        held = []
        deadline = time.monotonic() + GENEROUS
        while True:  # the server counts the closed connections out, then answers again
            with connect(srv) as again:
                status, _ = _request(again)
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status == 200
    finally:
        for s in held:
            s.close()
        srv.close()
