"""The DNS resolver of sandboxes whose policy names hosts (docs/network.md).

A domain rule is kept by the egress proxy only if it knows which addresses a name really has for the sandbox
that connects: so that sandbox's DNS, to whatever server it aims it, is redirected here (nft `redirect`),
forwarded to the host's upstreams and each answer's IPv4 addresses remembered for the name asked, and for every
name of its CNAME chain (rules.Table.record). The proxy then admits a connection carrying an allowed name only
to an address it was answered for that name.

We answer only names the sandbox's policy lets it resolve. Under deny-all that is the allowed names alone:
otherwise a sandbox allowed nothing by name could still send data out in the names it asks for, through the
upstream to whoever serves the zone. A name whose labels hold a dot or other escaped bytes is refused too:
as text it could look like a name under an allowed suffix while DNS sends it elsewhere.

The query is forwarded as the client sent it, but under an ID of ours: a sandbox picks its own query IDs, and a
forged answer should need to guess ours and the random source port. The upstream's answer goes back as it
came, with the client's ID put back. UDP first, TCP when the answer is truncated, the next upstream on a
timeout or error, SERVFAIL when none answers. Nothing here raises out of a handler or blocks the loop.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import struct

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from .rules import Table

log = logging.getLogger("sandboxd.egressproxy")

IDLE = 10.0  # seconds a TCP client may stay silent between queries (RFC 7766 asks for a few seconds)
MAX_TCP_CLIENTS = 256
MAX_UDP_INFLIGHT = 1024  # queries over UDP being answered at once; more are dropped, as a busy server does
MAX_MESSAGE = 65535  # the most a 2-byte TCP length can frame
CHAIN = 16  # CNAMEs followed at most in one answer
BIND_TRIES = 10
Upstreams = list[tuple[str, int]]


class _Failed(Exception):
    """No usable answer from this upstream over this transport."""


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _matches(query_id: int, wire: bytes) -> bool:
    return len(wire) >= 12 and struct.unpack("!H", wire[:2])[0] == query_id and bool(wire[2] & 0x80)


async def _udp(wire: bytes, host: str, port: int, query_id: int) -> bytes:
    """One answer over UDP. A connected socket hears only that upstream; stray datagrams are skipped."""
    loop = asyncio.get_running_loop()
    with socket.socket(_family(host), socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect((host, port))
        await loop.sock_sendall(sock, wire)
        while True:
            answer = await loop.sock_recv(sock, MAX_MESSAGE)
            if _matches(query_id, answer):
                return answer


async def _tcp(wire: bytes, host: str, port: int, query_id: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(struct.pack("!H", len(wire)) + wire)
        await writer.drain()
        (size,) = struct.unpack("!H", await reader.readexactly(2))
        answer = await reader.readexactly(size)
    finally:
        writer.close()
    if not _matches(query_id, answer):
        raise _Failed("answer to another query")
    return answer


def _answers(query: dns.message.Message, answer: bytes) -> dns.message.Message:
    """The answer parsed, if it is one to this question (the ID was checked already)."""
    try:
        msg = dns.message.from_wire(answer)
    except Exception as e:  # a broken upstream answer is that upstream failing, whatever dnspython raises
        raise _Failed(f"unparsable answer: {e}") from e
    if msg.question != query.question and not (msg.rcode() != dns.rcode.NOERROR and not msg.question):
        raise _Failed("answer to another question")
    return msg


async def forward(query: dns.message.Message, wire: bytes, upstreams: Upstreams, timeout: float,
                  limit: int | None = None) -> tuple[bytes, dns.message.Message] | None:
    """The first answer any upstream gives to this query (wire: its bytes), with the query's own ID, and the
    answer parsed; None if none answers. A truncated UDP answer is asked again over TCP, so that every address
    is seen; a client over UDP (limit: the most it takes) still gets the truncated one when the whole answer
    is too big for it, and comes back over TCP itself."""
    ours = secrets.randbits(16)
    sent = struct.pack("!H", ours) + wire[2:]
    for host, port in upstreams:
        try:
            async with asyncio.timeout(timeout):
                over_udp = answer = await _udp(sent, host, port, ours)
            if answer[2] & 0x02:  # TC
                try:
                    async with asyncio.timeout(timeout):
                        answer = await _tcp(sent, host, port, ours)
                except Exception:
                    if limit is None:
                        raise
            msg = _answers(query, answer)
        except Exception as e:  # timeouts, refused or reset connections, short reads, bad answers: the next one
            log.debug("upstream %s:%d failed for %s: %r", host, port, query.question[0].name, e)
            continue
        if limit is not None and len(answer) > limit:
            answer = over_udp
        return struct.pack("!H", query.id) + answer[2:], msg
    return None


def addresses(msg: dns.message.Message, qname: dns.name.Name) -> tuple[list[dns.name.Name], list[str], float]:
    """The names of qname's CNAME chain in the answer (qname first), the IPv4 addresses at its end and the
    smallest TTL along it; no addresses when the chain does not end in A records."""
    cnames: dict[dns.name.Name, tuple[dns.name.Name, int]] = {}
    a_records: dict[dns.name.Name, tuple[list[str], int]] = {}
    for rrset in msg.answer:
        if rrset.rdclass != dns.rdataclass.IN or not len(rrset):
            continue
        if rrset.rdtype == dns.rdatatype.CNAME:
            cnames[rrset.name] = (rrset[0].target, rrset.ttl)
        elif rrset.rdtype == dns.rdatatype.A:
            a_records[rrset.name] = ([r.address for r in rrset], rrset.ttl)
    names, ttls, name = [qname], [], qname
    while name in cnames and len(names) <= CHAIN:
        name, ttl = cnames[name]
        ttls.append(ttl)
        if name in names:  # a loop: no addresses at its end
            return names, [], 0.0
        names.append(name)
    if name not in a_records:
        return names, [], 0.0
    found, ttl = a_records[name]
    return names, found, float(min([*ttls, ttl]))


def _reply(query: dns.message.Message, rcode: dns.rcode.Rcode) -> bytes:
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    return response.to_wire()


async def lookup(name: str, upstreams: Upstreams, timeout: float = 2.0) -> tuple[list[str], float]:
    """The proxy's own A lookup: name's IPv4 addresses (after CNAMEs) and their smallest TTL; ([], 0) if the
    name has none or no upstream answers."""
    try:
        query = dns.message.make_query(name, dns.rdatatype.A, use_edns=0, payload=1232)
    except (dns.exception.DNSException, ValueError):
        return [], 0.0
    got = await forward(query, query.to_wire(), upstreams, timeout)
    if got is None or got[1].rcode() != dns.rcode.NOERROR:
        return [], 0.0
    _, found, ttl = addresses(got[1], query.question[0].name)
    return found, ttl


class Resolver:
    """Answers sandboxes over UDP and TCP on one port of the host."""

    def __init__(self, table: Table, upstreams: Upstreams, timeout: float = 2.0) -> None:
        self.table, self.upstreams, self.timeout = table, upstreams, timeout
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._udp_tasks: set[asyncio.Task[None]] = set()
        self._tcp_tasks: set[asyncio.Task[None]] = set()  # one a connection

    async def start(self, host: str = "0.0.0.0", port: int = 0) -> int:
        """Listen on UDP and TCP on the same port (0: one free for both) and return it."""
        loop = asyncio.get_running_loop()
        tries = BIND_TRIES if port == 0 else 1
        for attempt in range(tries):
            udp, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(self), local_addr=(host, port))
            chosen = int(udp.get_extra_info("sockname")[1])
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, host, chosen)
            except OSError:
                udp.close()
                if attempt == tries - 1:
                    raise
                continue
            self._udp = udp
            return chosen
        raise AssertionError("not reached")

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        tasks = self._udp_tasks | self._tcp_tasks
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._tcp is not None:
            await self._tcp.wait_closed()

    async def answer(self, client: str, wire: bytes, udp: bool = False) -> bytes | None:
        """The reply to one query from client (the sandbox's address), None to send nothing."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # whatever the sandbox sent, it is not a query we answer
            return None
        if query.flags & dns.flags.QR:
            return None  # a response: answering it could start a loop
        if self.table.rules(client) is None:
            return _reply(query, dns.rcode.REFUSED)
        if query.opcode() != dns.opcode.QUERY:
            return _reply(query, dns.rcode.NOTIMP)
        if len(query.question) != 1:
            return _reply(query, dns.rcode.FORMERR)
        qname = query.question[0].name
        name = qname.to_text(omit_final_dot=True).lower()
        if "\\" in name or not self.table.may_resolve(client, name):
            self.table.refuse(client, name, "", 53, "dns_refused")
            return _reply(query, dns.rcode.REFUSED)
        limit = max(512, query.payload if query.edns >= 0 else 0) if udp else None
        got = await forward(query, wire, self.upstreams, self.timeout, limit)
        if got is None:
            return _reply(query, dns.rcode.SERVFAIL)
        reply, msg = got
        if msg.rcode() == dns.rcode.NOERROR:
            names, found, ttl = addresses(msg, qname)
            for n in names if found else ():
                self.table.record(client, n.to_text(omit_final_dot=True), found, ttl)
        return reply

    def _datagram(self, data: bytes, client: tuple[str, int]) -> None:
        if len(self._udp_tasks) < MAX_UDP_INFLIGHT:
            task = asyncio.get_running_loop().create_task(self._answer_udp(client, data))
            self._udp_tasks.add(task)
            task.add_done_callback(self._udp_tasks.discard)

    async def _answer_udp(self, client: tuple[str, int], wire: bytes) -> None:
        try:
            reply = await self.answer(client[0], wire, udp=True)
            if reply is not None and self._udp is not None and not self._udp.is_closing():
                self._udp.sendto(reply, client)
        except Exception:
            log.exception("DNS query from %s over UDP", client[0])

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._tcp_tasks) >= MAX_TCP_CLIENTS or task is None:
            writer.close()
            return
        self._tcp_tasks.add(task)  # so that close() ends the connections too
        client = writer.get_extra_info("peername")[0]
        try:
            while True:
                async with asyncio.timeout(IDLE):
                    (size,) = struct.unpack("!H", await reader.readexactly(2))
                    wire = await reader.readexactly(size)
                reply = await self.answer(client, wire)
                if reply is None:
                    break  # not a query: the framing may be lost too
                writer.write(struct.pack("!H", len(reply)) + reply)
                async with asyncio.timeout(IDLE):  # a client that never reads must not hold us
                    await writer.drain()
        except (OSError, TimeoutError, EOFError):
            pass
        except Exception:
            log.exception("DNS query from %s over TCP", client)
        finally:
            self._tcp_tasks.discard(task)
            writer.close()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.resolver._datagram(data, addr)
