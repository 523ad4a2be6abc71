"""Connections through the owner's SOCKS5 proxy (runtime/egressproxy/socks.py and the proxy's use of it): a
SOCKS5 server of the test's own on 127.0.0.1, without and with a username, over TLS with a CA made here; a
refusal of the SOCKS server fails the connection, never sends it straight out."""
from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import subprocess

import pytest

from sandboxd.runtime.egressproxy.proxy import Proxy
from sandboxd.runtime.egressproxy.rules import HostRules, Table
from sandboxd.runtime.egressproxy.socks import TunnelFailed, open_tunnel

pytestmark = pytest.mark.asyncio


class Socks5:
    """RFC 1928 CONNECT (and RFC 1929 when a user is set), logging what it was asked to reach."""

    def __init__(self, user: tuple[str, str] | None = None, refuse: bool = False,
                 tls: ssl.SSLContext | None = None):
        self.user, self.refuse, self.tls = user, refuse, tls
        self.asked: list[tuple[str, int]] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            _, n = await r.readexactly(2)
            methods = await r.readexactly(n)
            if self.user:
                if 2 not in methods:
                    w.write(b"\x05\xff")
                    return
                w.write(b"\x05\x02")
                await r.readexactly(1)
                u = (await r.readexactly((await r.readexactly(1))[0])).decode()
                p = (await r.readexactly((await r.readexactly(1))[0])).decode()
                ok = (u, p) == self.user
                w.write(b"\x01\x00" if ok else b"\x01\x01")
                if not ok:
                    return
            else:
                w.write(b"\x05\x00")
            _, _, _, kind = await r.readexactly(4)
            assert kind == 1
            host, port = socket.inet_ntoa(await r.readexactly(4)), struct.unpack("!H", await r.readexactly(2))[0]
            self.asked.append((host, port))
            if self.refuse:
                w.write(b"\x05\x02\x00\x01" + bytes(6))
                return
            ur, uw = await asyncio.open_connection(host, port)
            w.write(b"\x05\x00\x00\x01" + bytes(6))
            try:
                await asyncio.gather(_pipe(r, uw), _pipe(ur, w))
            finally:
                uw.close()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()


async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """Copy to EOF, then half-close: a close with bytes still unread would reset the other side."""
    while chunk := await r.read(65536):
        w.write(chunk)
        await w.drain()
    if w.can_write_eof():
        w.write_eof()


async def echo_server() -> tuple[asyncio.Server, int]:
    async def serve(r, w):
        w.write(b"echo:" + await r.read(100))
        await w.drain()
        w.close()
    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1]


async def nothing(name: str) -> tuple[list[str], float]:
    return [], 0.0


async def test_a_connection_goes_through_the_proxy_with_and_without_a_user():
    _, port = await echo_server()
    for user in (None, ("agent", "s3cret")):
        socks = Socks5(user=user)
        sport = await socks.start()
        tunnel = {"host": "127.0.0.1", "port": sport, "username": user and user[0], "password": user and user[1]}
        r, w = await open_tunnel(tunnel, "127.0.0.1", port, mark=0, lookup=nothing, timeout=5)
        w.write(b"hi")
        assert await r.read() == b"echo:hi" and socks.asked == [("127.0.0.1", port)]
    wrong = Socks5(user=("agent", "other"))
    tunnel = {"host": "127.0.0.1", "port": await wrong.start(), "username": "agent", "password": "s3cret"}
    with pytest.raises(TunnelFailed, match="refused the username"):
        await open_tunnel(tunnel, "127.0.0.1", port, mark=0, lookup=nothing, timeout=5)


async def test_a_refusal_or_no_proxy_fails_the_connection():
    socks = Socks5(refuse=True)
    tunnel = {"host": "127.0.0.1", "port": await socks.start()}
    with pytest.raises(TunnelFailed, match="not allowed by its rules"):
        await open_tunnel(tunnel, "127.0.0.1", 9, mark=0, lookup=nothing, timeout=5)
    with pytest.raises(TunnelFailed, match="does not resolve"):
        await open_tunnel({"host": "socks.example.test", "port": 1080}, "127.0.0.1", 9, mark=0, lookup=nothing,
                          timeout=5)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(OSError):
        await open_tunnel({"host": "127.0.0.1", "port": closed}, "127.0.0.1", 9, mark=0, lookup=nothing, timeout=5)


async def test_tls_to_the_proxy_is_verified_against_the_ca_given(tmp_path):
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*a):
        subprocess.run(["openssl", *a], cwd=tmp_path, check=True, capture_output=True)
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=socks test CA")
    run("req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=socks.example.test")
    (tmp_path / "san").write_text("subjectAltName=DNS:socks.example.test\n")
    run("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "leaf.pem",
        "-days", "2", "-extfile", "san")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    socks = Socks5(tls=ctx)
    sport = await socks.start()
    _, port = await echo_server()
    ca = (tmp_path / "ca.pem").read_text()
    tunnel = {"host": "127.0.0.1", "port": sport, "tls": True, "server_name": "socks.example.test", "ca_cert": ca}
    r, w = await open_tunnel(tunnel, "127.0.0.1", port, mark=0, lookup=nothing, timeout=5)
    w.write(b"tls")
    assert await asyncio.wait_for(r.readexactly(8), 5) == b"echo:tls"  # TLS has no half-close to wait for
    w.close()
    with pytest.raises(TunnelFailed):  # another name than the certificate's: never falls back to plain
        await open_tunnel({**tunnel, "server_name": "other.example.test"}, "127.0.0.1", port, mark=0,
                          lookup=nothing, timeout=5)


async def test_the_proxy_dials_every_admitted_connection_through_the_tunnel():
    _, port = await echo_server()
    socks = Socks5()
    sport = await socks.start()
    table = Table()
    table.put("127.0.0.1", HostRules(allow_cidrs=("127.0.0.1/32",), tunnel={"host": "127.0.0.1", "port": sport}))
    proxy = Proxy(table, nothing, 0, original_dst=lambda sock: ("127.0.0.1", port), sniff_wait=0.05)
    pport = await proxy.start("127.0.0.1", 0)
    try:
        r, w = await asyncio.open_connection("127.0.0.1", pport)
        w.write(b"through")
        assert await asyncio.wait_for(r.read(), 5) == b"echo:through" and socks.asked == [("127.0.0.1", port)]
        table.put("127.0.0.1", HostRules(allow_cidrs=("127.0.0.1/32",), tunnel={"host": "127.0.0.1", "port": 9}))
        r, w = await asyncio.open_connection("127.0.0.1", pport)
        w.write(b"x")
        with pytest.raises(ConnectionResetError):  # fails closed, as a refused connect: never sent straight out
            await asyncio.wait_for(r.read(), 5)
        reasons = [x["reason"] for x in table.stats("127.0.0.1")["refused"]]
        assert reasons[-1] in ("connect_failed", "tunnel_failed")
    finally:
        await proxy.close()
