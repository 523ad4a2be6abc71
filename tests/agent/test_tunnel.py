"""CONNECT on the agent: a pipe to a loopback port of the sandbox (what the gateway uses for user ports)."""
from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hello(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        out = b"got " + body
        self.send_response(200)
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def _raw(agent_base: str, data: bytes) -> bytes:
    host, port = agent_base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
            if b"\r\n\r\n" in out and out.count(b"HTTP/1.") >= 2 and out.endswith(b"got hello"):
                break
        return out


def test_connect_pipes_to_a_loopback_port(agent):
    base, _ = agent
    app = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    try:
        port = app.server_address[1]
        # The request to the app travels in the same packet as the CONNECT: nothing of it may be lost.
        out = _raw(base, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
                   + b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello")
    finally:
        app.shutdown()
    assert out.startswith(b"HTTP/1.1 200 Connection Established\r\n\r\nHTTP/1.0 200 OK")
    assert out.endswith(b"got hello")


def test_connect_refuses_other_hosts_and_closed_ports(agent):
    base, _ = agent
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # bound, never listening
        out = _raw(base, f"CONNECT 127.0.0.1:{closed} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert out.startswith(b"HTTP/1.1 502 ") and b"port_not_open" in out
    for target in ("example.com:80", "10.0.0.1:80", "127.0.0.1:0", "127.0.0.1:99999", "127.0.0.1"):
        out = _raw(base, f"CONNECT {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert out.startswith(b"HTTP/1.1 400 "), (target, out[:80])
