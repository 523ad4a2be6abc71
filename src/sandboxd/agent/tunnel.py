"""`CONNECT 127.0.0.1:<port>` on the agent socket: a raw two-way pipe to a port a process in the sandbox
listens on. The gateway opens one per request for a sandbox's own ports (a web app, a dev server), which a
sandbox without a network interface could not otherwise serve. Only loopback: the agent is no proxy to
anywhere else the sandbox can reach."""
from __future__ import annotations

import asyncio

from sandboxd.errors import Invalid

from .errors import PortNotOpen

CHUNK = 64 * 1024
# The addresses each accepted host name may mean; "localhost" also covers a server bound to ::1 only.
LOOPBACK = {"127.0.0.1": ("127.0.0.1",), "localhost": ("127.0.0.1", "::1"), "[::1]": ("::1",)}
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_port(target: str) -> Streams:
    """A connection to the loopback port an authority-form target names; Invalid or PortNotOpen when there is none."""
    host, sep, raw = target.rpartition(":")
    if not sep or host not in LOOPBACK or not raw.isdigit() or not 0 < int(raw) < 65536:
        raise Invalid("CONNECT takes 127.0.0.1:<port> (loopback only)", code="invalid_argument")
    for address in LOOPBACK[host]:
        try:
            return await asyncio.open_connection(address, int(raw))
        except OSError:
            continue
    raise PortNotOpen(f"The sandbox port is not open: {raw}")


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: Streams,
               leftover: bytes) -> None:
    up_reader, up_writer = upstream
    writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
    if leftover:
        up_writer.write(leftover)
    to_app = asyncio.ensure_future(_copy(reader, up_writer))
    to_client = asyncio.ensure_future(_copy(up_reader, writer))
    try:
        await asyncio.wait({to_app, to_client}, return_when=asyncio.FIRST_COMPLETED)
        if to_app.done() and not to_client.done():
            await to_client  # the client is done sending: the app's answer still comes back
    finally:
        for t in (to_app, to_client):
            t.cancel()
        await asyncio.gather(to_app, to_client, return_exceptions=True)
        up_writer.close()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass
