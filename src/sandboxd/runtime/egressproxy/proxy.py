"""The transparent TCP proxy that applies a sandbox's host-name rules (rules.py) to its connections.

nft redirects a sandbox's TCP connections that no IP rule settles to this proxy (runtime/network.py). For each
one the proxy finds where the sandbox was going (SO_ORIGINAL_DST), reads the name it carries (sniff.py: TLS SNI
or HTTP Host, parsed by the ssl module and h11), asks the table for a verdict, and then either connects to that
same address and port, replays what it read and relays the rest, or refuses: an HTTP client gets a 403 saying
why, anything else a reset. The upstream socket carries the operator's mark (SO_MARK) before it connects, so
the host's firewall applies the egress floor to what the proxy sends as it would to the sandbox itself; a
connect the floor refuses is counted as a refusal too.

A sandbox whose owner named a SOCKS5 proxy (E2B's `egressProxy`) has every admitted connection dialled through
it (socks.py), never straight out.

Past the first bytes a connection is a raw two-way byte relay (half-close passed on, a reset answered with a
reset), except for plain HTTP to a name with header rules, whose requests are parsed and rewritten one by one
(headers.py). A connection's failure ends that connection only; there is no shared upstream state.
Measured on loopback (a 2-core host, the test client and server in another process, asyncio's own loop): a
proxied connection costs the proxy about 1.2-1.5 ms of CPU (accept, sniff ~0.07 ms, decide, upstream connect,
relay setup and teardown: mostly asyncio), plus the sniff wait for a client that sends nothing first; the raw
relay moves about 0.55 GB/s (0.85 GB/s direct on the same host). The proxy process runs on uvloop: from a real
sandbox (bench/egress.py) a connection's setup takes 0.85 ms more than direct at p50, and the relay moves
6.8 Gbit/s for 0.18 s of the proxy's CPU per Gbit.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import h11

from sandboxd.runtime.egressproxy import headers
from sandboxd.runtime.egressproxy.rules import HostRules, Table, Verdict
from sandboxd.runtime.egressproxy.sniff import Sniffed, sniff
from sandboxd.runtime.egressproxy.socks import TunnelFailed, open_tunnel

log = logging.getLogger(__name__)

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
SO_MARK = getattr(socket, "SO_MARK", 36)
MAX_CONNECTIONS = 4096
PER_SANDBOX = 1024  # so one sandbox cannot take every slot
LOOKUP_TIMEOUT = 5.0
DRAIN_WAIT = 5.0  # seconds the answers under way get before a refused request's 403
CHUNK = 256 * 1024  # relay reads (asyncio reads up to 256 KiB per recv)
LIMIT = 64 * 1024  # a reader buffers up to twice this before it stops reading its socket
LINGER = 1.0  # seconds a refused HTTP client's further bytes are read, so the 403 is not lost to a reset
FLOOR_ERRNOS = frozenset({errno.EHOSTUNREACH, errno.EACCES, errno.EPERM, errno.ENETUNREACH})

_NO_RULES = HostRules()
Lookup = Callable[[str], Awaitable[tuple[list[str], float]]]
OriginalDst = Callable[[socket.socket], tuple[str, int]]


def original_dst(sock: socket.socket) -> tuple[str, int]:
    """Where a redirected connection was going, before nft rewrote it to us (a struct sockaddr_in)."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    return socket.inet_ntoa(raw[4:8]), int.from_bytes(raw[2:4], "big")


def forbidden(destination: str, reason: str) -> bytes:
    body = f"sandbox egress policy refused {destination}: {reason}\n".encode("utf-8", "replace")
    return (b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (len(body), body))


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a RST (SO_LINGER 0), as a refused or broken connection would be without the proxy."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass
class _Conn:
    sandbox: str
    dst_ip: str
    dst_port: int
    destination: str = ""  # what the bytes are counted under (a request for another name changes it)
    refusing: bool = False  # a 403 is to follow the server's answers: its EOF is not passed on
    eof_passed: bool = False  # the server's EOF went on to the client
    counted: set[str] = field(default_factory=set)  # destinations this connection was counted for


class Proxy:
    def __init__(self, table: Table, lookup: Lookup, mark: int, original_dst: OriginalDst = original_dst,
                 sniff_wait: float = 0.3, connect_timeout: float = 10.0) -> None:
        self.table, self._lookup, self._mark = table, lookup, mark
        self._original_dst, self._sniff_wait, self._connect_timeout = original_dst, sniff_wait, connect_timeout
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._per_sandbox: dict[str, int] = {}

    async def start(self, host: str = "0.0.0.0", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._accept, host, port, limit=LIMIT, backlog=1024)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task, peer = asyncio.current_task(), writer.get_extra_info("peername")
        if task is None or not peer:  # gone before we looked
            writer.transport.abort()
            return
        sandbox = str(peer[0])
        busy = len(self._tasks) >= MAX_CONNECTIONS or self._per_sandbox.get(sandbox, 0) >= PER_SANDBOX
        self._tasks.add(task)
        self._per_sandbox[sandbox] = self._per_sandbox.get(sandbox, 0) + 1
        try:
            await self._serve(reader, writer, sandbox, busy)
        except (OSError, h11.ProtocolError, asyncio.IncompleteReadError) as e:
            log.debug("egress connection of %s ended: %r", sandbox, e)
        except Exception:
            log.exception("egress connection of %s failed", sandbox)
        except asyncio.CancelledError:
            pass  # close(): asyncio's stream server (3.11) logs a cancelled connection task as an error
        finally:
            if not writer.transport.is_closing():
                _reset(writer)
            self._tasks.discard(task)
            self._per_sandbox[sandbox] -= 1
            if not self._per_sandbox[sandbox]:
                del self._per_sandbox[sandbox]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sandbox: str,
                     busy: bool) -> None:
        if self.table.rules(sandbox) is None:
            return
        sock = writer.get_extra_info("socket")
        dst_ip, dst_port = self._original_dst(sock)
        if (dst_ip, dst_port) == tuple(sock.getsockname()[:2]):
            return  # not redirected: a direct connection to the proxy itself
        c = _Conn(sandbox, dst_ip, dst_port)
        if busy:
            self.table.refuse(sandbox, dst_ip, dst_ip, dst_port, "busy")
            return
        sniffed = await sniff(reader, self._sniff_wait)
        verdict = await self._decide(c, sniffed.name, sniffed.kind == "tls")
        c.destination = verdict.destination
        if not verdict.allow:
            return await self._refuse(c, reader, writer, sniffed, verdict.reason)
        tunnel = (self.table.rules(sandbox) or _NO_RULES).tunnel
        try:
            if tunnel:  # the owner's SOCKS5 proxy, never straight out (socks.py)
                up_reader, up_writer = await open_tunnel(tunnel, dst_ip, dst_port, mark=self._mark,
                                                         lookup=self._lookup, timeout=self._connect_timeout)
            else:
                up_reader, up_writer = await self._connect(dst_ip, dst_port)
        except TunnelFailed as e:
            log.debug("egress tunnel of %s failed: %s", sandbox, e)
            self.table.refuse(sandbox, c.destination, dst_ip, dst_port, "tunnel_failed")
            return _reset(writer)
        except OSError as e:  # the floor's refusal is the policy's (a 403 for HTTP); anything else a reset
            if e.errno in FLOOR_ERRNOS:
                return await self._refuse(c, reader, writer, sniffed, "floor")
            self.table.refuse(sandbox, c.destination, dst_ip, dst_port, "connect_failed")
            return _reset(writer)
        self._count_connection(c)
        try:
            await self._relay(c, sniffed, reader, writer, up_reader, up_writer)
        finally:
            if not up_writer.transport.is_closing():
                _reset(up_writer)

    async def _decide(self, c: _Conn, name: str | None, tls: bool) -> Verdict:
        """The table's verdict; for a name it has no addresses of yet, once more after resolving it."""
        verdict = self.table.decide(c.sandbox, c.dst_ip, name, tls)
        if verdict.reason == "name_not_resolved" and name:
            try:
                addresses, ttl = await asyncio.wait_for(self._lookup(name), LOOKUP_TIMEOUT)
            except Exception as e:  # an unresolvable name stays unresolved
                log.debug("egress lookup of %s failed: %r", name, e)
                return verdict
            self.table.record(c.sandbox, name, list(addresses), ttl)
            verdict = self.table.decide(c.sandbox, c.dst_ip, name, tls)
        return verdict

    async def _refuse(self, c: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      sniffed: Sniffed, reason: str) -> None:
        self.table.refuse(c.sandbox, c.destination, c.dst_ip, c.dst_port, reason)
        if sniffed.kind == "http":
            await self._forbid(reader, writer, c.destination, reason)
        else:
            _reset(writer)

    async def _forbid(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, destination: str,
                      reason: str) -> None:
        writer.write(forbidden(destination, reason))
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.drain(), LINGER)
            writer.write_eof()
            loop = asyncio.get_running_loop()
            until = loop.time() + LINGER
            while await asyncio.wait_for(reader.read(CHUNK), max(until - loop.time(), 0)):
                pass
        writer.close()

    async def _connect(self, ip: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            try:  # never unmarked: the floor would not apply to it
                sock.setsockopt(socket.SOL_SOCKET, SO_MARK, self._mark)
            except OSError as e:
                raise RuntimeError(f"cannot set SO_MARK {self._mark}: {e}") from e
            sock.setblocking(False)
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (ip, port)), self._connect_timeout)
            return await asyncio.open_connection(sock=sock, limit=LIMIT)
        except BaseException:
            sock.close()
            raise

    async def _relay(self, c: _Conn, sniffed: Sniffed, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
        def sent(n: int) -> None:
            self.table.count(c.sandbox, c.destination, sent=n)

        def received(n: int) -> None:
            self.table.count(c.sandbox, c.destination, received=n)

        rules = self.table.rules(c.sandbox)
        rewrite = sniffed.kind == "http" and rules is not None and bool(rules.headers_for(sniffed.name))
        down = asyncio.create_task(self._pipe(up_reader, writer, received, c))
        try:
            if rewrite:
                refused = await headers.forward(sniffed.data, reader, up_writer, sniffed.name,
                                                lambda name: self._recheck(c, name), self._headers_of(c), sent)
                if refused is not None:
                    return await self._refuse_later(c, reader, writer, up_writer, down, refused)
            else:
                up_writer.write(sniffed.data)
                sent(len(sniffed.data))
                await self._pipe(reader, up_writer, sent, None)
            await down
        except BaseException:
            _reset(writer)
            _reset(up_writer)
            raise
        finally:
            down.cancel()
            await asyncio.gather(down, return_exceptions=True)
        writer.close()
        up_writer.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: Callable[[int], None],
                    c: _Conn | None) -> None:
        """Copy until EOF, then pass the EOF on (shutdown SHUT_WR). A reset or error on either side resets
        both, so the other direction ends too."""
        try:
            while chunk := await src.read(CHUNK):
                dst.write(chunk)
                count(len(chunk))
                await dst.drain()
            if c is None or not c.refusing:
                with contextlib.suppress(OSError):
                    dst.write_eof()
                if c is not None:
                    c.eof_passed = True
        except OSError:
            _reset(dst)
            raise

    def _headers_of(self, c: _Conn) -> Callable[[str | None], headers.Headers]:
        def of(name: str | None) -> headers.Headers:
            rules = self.table.rules(c.sandbox)
            return rules.headers_for(name) if rules else ()
        return of

    async def _recheck(self, c: _Conn, name: str | None) -> Verdict:
        """A request on the connection for another name than it was admitted for."""
        verdict = await self._decide(c, name, False)
        if verdict.allow:
            c.destination = verdict.destination
            self._count_connection(c)
        return verdict

    def _count_connection(self, c: _Conn) -> None:
        """One connection for each destination it carried requests to (a keep-alive one may carry several)."""
        if c.destination not in c.counted:
            c.counted.add(c.destination)
            self.table.count(c.sandbox, c.destination, connections=1)

    async def _refuse_later(self, c: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            up_writer: asyncio.StreamWriter, down: asyncio.Task[None], verdict: Verdict) -> None:
        """A request for a refused name mid-connection: the server finishes the answers under way (its
        connection half-closed), then the client gets the 403; if the server does not finish, a reset."""
        self.table.refuse(c.sandbox, verdict.destination, c.dst_ip, c.dst_port, verdict.reason)
        c.refusing = True
        up_writer.write_eof()
        done, _ = await asyncio.wait({down}, timeout=DRAIN_WAIT)
        if not done or down.exception() is not None or c.eof_passed or writer.transport.is_closing():
            _reset(writer)
            return
        _reset(up_writer)
        await self._forbid(reader, writer, verdict.destination, verdict.reason)
