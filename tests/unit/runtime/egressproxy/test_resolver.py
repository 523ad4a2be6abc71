"""The sandboxes' resolver against a small authoritative server of our own, all on 127.0.0.1 (the client, so the
sandbox, is 127.0.0.1 too)."""
from __future__ import annotations

import asyncio
import socket
import struct

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from sandboxd.runtime.egressproxy.resolver import Resolver, lookup
from sandboxd.runtime.egressproxy.rules import HostRules, Table

SANDBOX = "127.0.0.1"
BIG = [f"198.51.100.{i}" for i in range(1, 61)]  # ~1 kB of A records: more than a 512-byte UDP answer holds


class Upstream:
    """Answers a.test.example (A), alias.test.example (CNAME to it), big.test.example (truncated over UDP),
    never answers silent.test.example, and NXDOMAIN for the rest. Keeps what it was asked and what it sent."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []  # (udp|tcp, name)
        self.sent: list[bytes] = []
        self.port = 0

    def respond(self, wire: bytes, transport: str) -> bytes | None:
        query = dns.message.from_wire(wire)
        name = query.question[0].name.to_text(omit_final_dot=True)
        self.seen.append((transport, name))
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name == "silent.test.example":
            return None
        if name == "a.test.example":
            response.answer.append(dns.rrset.from_text(name + ".", 60, "IN", "A", "192.0.2.10"))
        elif name == "alias.test.example":
            response.answer.append(dns.rrset.from_text(name + ".", 30, "IN", "CNAME", "a.test.example."))
            response.answer.append(dns.rrset.from_text("a.test.example.", 60, "IN", "A", "192.0.2.10"))
        elif name == "big.test.example" and transport == "udp":
            response.flags |= dns.flags.TC
        elif name == "big.test.example":
            response.answer.append(dns.rrset.from_text_list(name + ".", 120, "IN", "A", BIG))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        self.sent.append(response.to_wire())
        return self.sent[-1]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        upstream = self

        class Datagrams(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                answer = upstream.respond(data, "udp")
                if answer is not None:
                    self.transport.sendto(answer, addr)

        async def serve(reader, writer):
            try:
                while True:
                    (size,) = struct.unpack("!H", await reader.readexactly(2))
                    answer = self.respond(await reader.readexactly(size), "tcp")
                    if answer is not None:
                        writer.write(struct.pack("!H", len(answer)) + answer)
            except asyncio.IncompleteReadError:
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.udp, _ = await loop.create_datagram_endpoint(Datagrams, local_addr=("127.0.0.1", self.port))

    def close(self) -> None:
        self.udp.close()
        self.server.close()


@pytest.fixture
async def upstream():
    server = Upstream()
    await server.start()
    yield server
    server.close()


@pytest.fixture
def table():
    t = Table()
    t.put(SANDBOX, HostRules(deny_cidrs=("0.0.0.0/0",), allow_names=("a.test.example", "*.test.example")))
    return t


@pytest.fixture
async def port(table, upstream):
    resolver = Resolver(table, [("127.0.0.1", upstream.port)], timeout=0.3)
    yield await resolver.start("127.0.0.1")
    await resolver.close()


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _udp(port: int, wire: bytes, timeout: float = 2.0) -> bytes:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        s.connect(("127.0.0.1", port))
        await loop.sock_sendall(s, wire)
        return await asyncio.wait_for(loop.sock_recv(s, 65535), timeout)


async def _ask(port: int, name: str | dns.name.Name, **kw) -> dns.message.Message:
    return dns.message.from_wire(await _udp(port, dns.message.make_query(name, "A", **kw).to_wire()))


async def _tcp(port: int, *wires: bytes) -> list[dns.message.Message]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"".join(struct.pack("!H", len(w)) + w for w in wires))
        answers = []
        for _ in wires:
            (size,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 2))
            answers.append(dns.message.from_wire(await reader.readexactly(size)))
        return answers
    finally:
        writer.close()


async def test_answer_is_passed_back_unchanged_and_its_addresses_recorded(port, table, upstream):
    query = dns.message.make_query("a.test.example", "A")
    wire = await _udp(port, query.to_wire())
    assert wire[:2] == query.to_wire()[:2] and wire[2:] == upstream.sent[-1][2:]
    assert [r.address for r in dns.message.from_wire(wire).answer[0]] == ["192.0.2.10"]
    assert table.resolved(SANDBOX, "a.test.example") == {"192.0.2.10"}


async def test_cname_chain_binds_the_addresses_to_every_name_of_it(port, table):
    answer = await _ask(port, "alias.test.example")
    assert answer.rcode() == dns.rcode.NOERROR
    assert table.resolved(SANDBOX, "alias.test.example") == {"192.0.2.10"}
    assert table.resolved(SANDBOX, "a.test.example") == {"192.0.2.10"}


async def test_names_not_allowed_under_deny_all_are_refused_and_never_forwarded(port, table, upstream):
    query = dns.message.make_query("exfil.other.example", "TXT")
    answer = dns.message.from_wire(await _udp(port, query.to_wire()))
    assert answer.rcode() == dns.rcode.REFUSED and answer.id == query.id and answer.question == query.question
    assert upstream.seen == []
    assert [(r["destination"], r["reason"]) for r in table.stats(SANDBOX)["refused"]] == \
        [("exfil.other.example", "dns_refused")]


async def test_a_label_holding_a_dot_is_refused_though_its_text_ends_in_an_allowed_suffix(port, upstream):
    answer = await _ask(port, dns.name.Name([b"data.test", b"example", b""]))
    assert answer.rcode() == dns.rcode.REFUSED and upstream.seen == []


async def test_unknown_clients_are_refused(port, table, upstream):
    table.drop(SANDBOX)
    assert (await _ask(port, "a.test.example")).rcode() == dns.rcode.REFUSED
    assert upstream.seen == []


async def test_other_opcodes_and_question_counts_are_not_forwarded(port, upstream):
    notify = dns.message.make_query("a.test.example", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    assert dns.message.from_wire(await _udp(port, notify.to_wire())).rcode() == dns.rcode.NOTIMP
    two = dns.message.make_query("a.test.example", "A")
    two.find_rrset(two.question, dns.name.from_text("b.test.example"), 1, dns.rdatatype.A, create=True)
    assert dns.message.from_wire(await _udp(port, two.to_wire())).rcode() == dns.rcode.FORMERR
    assert upstream.seen == []


async def test_tcp_answers_several_queries_on_one_connection(port):
    first, second = (dns.message.make_query(n, "A") for n in ("a.test.example", "nx.test.example"))
    answers = await _tcp(port, first.to_wire(), second.to_wire())
    assert [a.id for a in answers] == [first.id, second.id]
    assert [a.rcode() for a in answers] == [dns.rcode.NOERROR, dns.rcode.NXDOMAIN]


async def test_truncated_answer_is_fetched_over_tcp_and_every_address_recorded(port, table, upstream):
    answer = await _ask(port, "big.test.example")  # no EDNS: 512 bytes at most
    assert answer.flags & dns.flags.TC  # too big for this client: it comes back over TCP itself
    assert ("tcp", "big.test.example") in upstream.seen
    assert table.resolved(SANDBOX, "big.test.example") == set(BIG)
    (full,) = await _tcp(port, dns.message.make_query("big.test.example", "A").to_wire())
    assert not full.flags & dns.flags.TC and sorted(r.address for r in full.answer[0]) == sorted(BIG)


async def test_upstream_that_never_answers_gives_servfail(port):
    assert (await _ask(port, "silent.test.example")).rcode() == dns.rcode.SERVFAIL


async def test_next_upstream_is_asked_when_one_fails(table, upstream):
    resolver = Resolver(table, [("127.0.0.1", _closed_port()), ("127.0.0.1", upstream.port)], timeout=0.3)
    port = await resolver.start("127.0.0.1")
    try:
        assert (await _ask(port, "a.test.example")).rcode() == dns.rcode.NOERROR
    finally:
        await resolver.close()


async def test_malformed_input_is_dropped_and_the_server_keeps_answering(port):
    with pytest.raises(TimeoutError):
        await _udp(port, b"\x12\x34 not dns at all", timeout=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(struct.pack("!H", 5) + b"junk!")
    assert await asyncio.wait_for(reader.read(), 2) == b""  # closed, nothing sent
    writer.close()
    assert (await _ask(port, "a.test.example")).rcode() == dns.rcode.NOERROR
    (answer,) = await _tcp(port, dns.message.make_query("a.test.example", "A").to_wire())
    assert answer.rcode() == dns.rcode.NOERROR


async def test_lookup_follows_cnames_and_gives_the_smallest_ttl(upstream):
    ups = [("127.0.0.1", upstream.port)]
    assert await lookup("alias.test.example", ups) == (["192.0.2.10"], 30.0)
    assert await lookup("nx.test.example", ups) == ([], 0.0)
    assert await lookup("silent.test.example", ups, timeout=0.2) == ([], 0.0)
