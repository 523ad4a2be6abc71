"""The request framer read a byte at a time: the same verdicts as when a head arrives whole (the checks
for bare CR/LF and folds only look at what is new, so a CRLF cut in two must not look bare, and a bare
LF cut off from its line must still be seen)."""
from __future__ import annotations

import h11
import pytest

from sandboxd.gateway.errors import GatewayError
from sandboxd.gateway.framing import RequestFramer
from sandboxd.gateway.heads import Head


def byte_by_byte(data: bytes):
    framer = RequestFramer()
    for i in range(len(data)):
        framer.feed(data[i:i + 1])
        ev = framer.next_event()
        if ev is not h11.NEED_DATA:
            return ev
    return framer.next_event()


def test_a_head_sent_a_byte_at_a_time_is_parsed():
    head = byte_by_byte(b"GET /a HTTP/1.1\r\nHost: gw\r\nX-A: b\r\n\r\n")
    assert isinstance(head, Head) and head.target == "/a" and head.header("x-a") == "b"


@pytest.mark.parametrize("data", [b"GET /a HTTP/1.1\r\nHost: gw\nX-A: b\r\n\r\n",
                                  b"GET /a HTTP/1.1\r\nHost: gw\r\n X-A: b\r\n\r\n",
                                  b"GET /a HTTP/1.1\r\nHost: gw\rX-A: b\r\n\r\n",
                                  b"GET /a HTTP/1.1\r\nHost: gw\r\n\n"])
def test_ambiguous_line_endings_are_seen_however_they_arrive(data):
    with pytest.raises(GatewayError) as e:
        byte_by_byte(data)
    assert e.value.status == 400
    framer = RequestFramer()
    framer.feed(data)
    with pytest.raises(GatewayError):
        framer.next_event()


def test_pipelined_requests_are_each_checked_from_their_first_byte():
    framer = RequestFramer()
    framer.feed(b"GET /a HTTP/1.1\r\nHost: gw\r\n\r\nGET /b HTTP/1.1\r\nHost: gw\nTransfer-Encoding: chunked\r\n\r\n")
    assert framer.next_event().target == "/a"
    assert isinstance(framer.next_event(), h11.EndOfMessage)
    framer.respond(h11.Response(status_code=204, headers=[]))
    framer.respond(h11.EndOfMessage())
    framer.next_cycle()
    with pytest.raises(GatewayError):
        framer.next_event()


def test_a_head_over_the_limit_is_a_431():
    framer = RequestFramer()
    framer.feed(b"GET /a HTTP/1.1\r\nHost: gw\r\nX-A: " + b"a" * 70000)
    with pytest.raises(GatewayError) as e:
        framer.next_event()
    assert e.value.status == 431


@pytest.mark.parametrize("data", [b"CONNECT / HTTP/1.1\r\nHost: gw\r\n\r\n",
                                  b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: gw\r\n\r\n",
                                  b"GET http://other/ HTTP/1.1\r\nHost: gw\r\n\r\n"])
def test_connect_and_non_origin_targets_are_refused(data):
    """A client's CONNECT (whatever its target) would turn the agent connection into a raw tunnel."""
    framer = RequestFramer()
    framer.feed(data)
    with pytest.raises(GatewayError) as err:
        framer.next_event()
    assert err.value.status == 400
