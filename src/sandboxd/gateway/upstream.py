"""Connections from the gateway to agents' unix sockets, spoken through h11 (client side).

An agent is as hostile as the sandbox it runs in, so its answers are parsed as strictly as clients'
requests: h11 frames them, and the gateway writes them on to the client through the client's own h11
connection (a malformed answer is a 502, or a closed connection once the answer has started).

A connection is only used again when h11 says both sides finished the exchange cleanly (`reusable`),
and only by the client connection that opened it (gateway/proxy.py pins them): one client's request can
never leave bytes that another client's request or answer would be framed with.
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import h11

from sandboxd.gateway.errors import GatewayError
from sandboxd.gateway.framing import HEAD_LIMIT

CHUNK = 64 * 1024


class UpstreamFailed(Exception):
    """The agent broke the exchange (closed, or sent something h11 refuses)."""


class Upstream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, socket: Path,
                 pending: bytes = b"", tunnel: bool = False):
        self.reader, self.writer, self.socket, self.tunnel = reader, writer, socket, tunnel
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=HEAD_LIMIT)
        self.pending = pending  # bytes already read for this conversation (after a CONNECT's answer)
        self.idle_since = time.monotonic()
        self.received = 0  # bytes of the current exchange's answer
        self.reused = False

    @classmethod
    async def open(cls, socket: Path) -> Upstream:
        try:
            reader, writer = await asyncio.open_unix_connection(str(socket), limit=HEAD_LIMIT)
        except OSError as exc:
            raise GatewayError(502, "AGENT_UNAVAILABLE", f"sandbox agent is not reachable: {exc.strerror or exc}") from None
        return cls(reader, writer, socket)

    @classmethod
    async def tunnel_to(cls, socket: Path, port: int) -> Upstream:
        """A pipe to a port of the sandbox through the agent's CONNECT, with a fresh h11 connection for
        the HTTP the client speaks to the app on it (never reused: the app may close it as it likes)."""
        up = await cls.open(socket)
        hop = cls(up.reader, up.writer, socket)
        try:
            authority = f"127.0.0.1:{port}".encode()
            hop.send(h11.Request(method=b"CONNECT", target=authority, headers=[(b"Host", authority)]))
            hop.send(h11.EndOfMessage())
            await hop.drain()
            answer = await hop.next_event()
            if not isinstance(answer, h11.Response):
                raise UpstreamFailed(f"unexpected {type(answer).__name__}")
            if answer.status_code != 200:
                body = b""
                while isinstance(ev := await hop.next_event(), h11.Data) and len(body) < HEAD_LIMIT:
                    body += ev.data
                try:
                    message = json.loads(body)["message"]
                except (ValueError, KeyError, TypeError):
                    message = f"The sandbox port is not open: {port}"
                raise GatewayError(502, "PORT_NOT_OPEN", str(message)[:500], {"port": port})
        except UpstreamFailed as exc:
            up.writer.close()
            raise GatewayError(502, "AGENT_UNAVAILABLE", f"sandbox agent failed: {exc}") from None
        except GatewayError:
            up.writer.close()
            raise
        data, _ = hop.conn.trailing_data
        return cls(up.reader, up.writer, socket, pending=hop.pending + bytes(data), tunnel=True)

    def send(self, event, end: bool = False) -> None:
        """Write `event` (and, with `end`, the end of the message: one write for a request without a body)."""
        data = self.conn.send(event) or b""
        if end:
            data += self.conn.send(h11.EndOfMessage()) or b""
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    async def next_event(self, before_read=None):
        """The next h11 event of the answer; `before_read` (a coroutine function) runs before waiting for
        more bytes, so that what was relayed so far goes out in one write rather than one per event."""
        while True:
            try:
                ev = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise UpstreamFailed(f"malformed answer: {exc}") from None
            if ev is not h11.NEED_DATA:
                return ev
            if self.pending:
                data, self.pending = self.pending, b""
            else:
                if before_read is not None:
                    await before_read()
                try:
                    data = await self.reader.read(CHUNK)
                except (ConnectionError, OSError) as exc:
                    raise UpstreamFailed(str(exc) or type(exc).__name__) from None
            self.received += len(data)
            self.conn.receive_data(data)

    def leftover(self) -> bytes:
        """What the agent sent after its answer (after a 101: the start of the new protocol)."""
        return self.pending + bytes(self.conn.trailing_data[0])

    def usable(self, has_body: bool, idle_reuse: float) -> bool:
        """Still fit to carry a request. One with a body is not sent on a connection idle for long: if the
        agent closed it meanwhile, the body could not be sent again."""
        return not (self.reader.at_eof() or self.writer.is_closing()
                    or (has_body and time.monotonic() - self.idle_since > idle_reuse))

    def reusable(self) -> bool:
        return (not self.tunnel and self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE
                and not self.pending and not self.conn.trailing_data[0])  # bytes nobody asked for: drop

    def next_cycle(self) -> None:
        self.conn.start_next_cycle()
        self.idle_since, self.received, self.reused = time.monotonic(), 0, False

    def close(self) -> None:
        self.writer.close()
