"""A connection out through the sandbox owner's SOCKS5 proxy (E2B's `egressProxy`; docs/network.md).

The egress proxy has already decided the connection by the sandbox's rules: this only dials. It connects to
the SOCKS5 proxy with the operator's mark on its socket (so the floor applies to the proxy's address, as to
any destination: a proxy in a closed range is refused unless the operator opened it), optionally speaks TLS
to it (verified, TLS 1.2 or newer, never falling back to plain), then asks it to CONNECT to the address the
sandbox was going to, with a username and password when given (RFC 1928, RFC 1929). Any failure fails the
connection: nothing goes out directly instead.

The client side of SOCKS5 CONNECT is written here (four short messages) rather than taken from python-socks:
that library dials the proxy itself, with no way to mark its socket before it connects, and an unmarked
socket would leave the floor behind.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import struct
from typing import Any, Awaitable, Callable

SO_MARK = getattr(socket, "SO_MARK", 36)
REPLIES = {1: "general failure", 2: "not allowed by its rules", 3: "network unreachable", 4: "host unreachable",
           5: "connection refused", 6: "TTL expired", 7: "command not supported", 8: "address type not supported"}

Lookup = Callable[[str], Awaitable[tuple[list[str], float]]]


class TunnelFailed(Exception):
    """The SOCKS5 proxy could not be reached, refused us, or could not reach the destination."""


def tls_context(tunnel: dict[str, Any]) -> ssl.SSLContext | None:
    if not tunnel.get("tls"):
        return None
    ctx = ssl.create_default_context(cadata=tunnel["ca_cert"]) if tunnel.get("ca_cert") else \
        ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def open_tunnel(tunnel: dict[str, Any], dst_ip: str, dst_port: int, *, mark: int, lookup: Lookup,
                      timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream to dst through the proxy, ready for the sandbox's bytes. OSError: the host refused the
    connection to the proxy (the floor); TunnelFailed: anything else."""
    host, port = tunnel["host"], int(tunnel["port"])
    try:
        addr = str(ipaddress.IPv4Address(host))
    except ValueError:
        found, _ = await lookup(host)  # resolved now, this connection pinned to the address found
        if not found:
            raise TunnelFailed(f"the egress proxy's name {host} does not resolve") from None
        addr = found[0]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        sock.setblocking(False)
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (addr, port)), timeout)
        ctx = tls_context(tunnel)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            sock=sock, ssl=ctx, server_hostname=(tunnel.get("server_name") or host) if ctx else None), timeout)
    except (asyncio.TimeoutError, ssl.SSLError) as exc:  # SSLError first: it is an OSError too
        sock.close()
        raise TunnelFailed(f"the egress proxy {host}:{port}: {exc or 'timed out'}") from exc
    except OSError:
        sock.close()
        raise
    try:
        await asyncio.wait_for(_handshake(reader, writer, tunnel, dst_ip, dst_port), timeout)
    except BaseException as exc:
        writer.transport.abort()
        if isinstance(exc, (asyncio.TimeoutError, asyncio.IncompleteReadError, OSError)):
            raise TunnelFailed(f"the egress proxy {host}:{port}: {exc or 'timed out'}") from exc
        raise
    return reader, writer


async def _handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tunnel: dict[str, Any],
                     dst_ip: str, dst_port: int) -> None:
    user, password = tunnel.get("username"), tunnel.get("password")
    writer.write(b"\x05\x02\x00\x02" if user else b"\x05\x01\x00")  # methods: none, and user/password if given
    version, method = await reader.readexactly(2)
    if version != 5 or method not in ((0, 2) if user else (0,)):
        raise TunnelFailed("the egress proxy accepts none of our authentication methods")
    if method == 2:
        u, p = (user or "").encode(), (password or "").encode()
        writer.write(bytes([1, len(u)]) + u + bytes([len(p)]) + p)
        if (await reader.readexactly(2))[1] != 0:
            raise TunnelFailed("the egress proxy refused the username and password")
    writer.write(b"\x05\x01\x00\x01" + socket.inet_aton(dst_ip) + struct.pack("!H", dst_port))
    version, reply, _, kind = await reader.readexactly(4)
    if version != 5 or reply != 0:
        raise TunnelFailed(f"the egress proxy could not connect: {REPLIES.get(reply, f'reply {reply}')}")
    size = {1: 4, 4: 16}.get(kind)
    if size is None:
        if kind != 3:
            raise TunnelFailed(f"the egress proxy answered an unknown address type {kind}")
        size = (await reader.readexactly(1))[0]
    await reader.readexactly(size + 2)  # the address it bound, which we do not need
