"""Two CRIU image files rewritten for a memory fork (docs/snapshots.md): the child's user namespace maps its own
host uid range, and its UTS namespace carries its own host name.

A CRIU image is two 32-bit magics, then entries, each a 32-bit little-endian length and a protobuf message
(images/userns.proto: `userns_entry { repeated uid_gid_extent uid_map = 1; gid_map = 2 }`, `uid_gid_extent
{ first = 1; lower_first = 2; count = 3 }`; images/utsns.proto: `utsns_entry { nodename = 1; domainname = 2 }`).
Three small messages of plain varints and bytes: the few lines of protobuf wire format below read and write
them; the protobuf package and CRIU's own `crit` would add a dependency for this alone.
"""
from __future__ import annotations

import struct
from pathlib import Path

VARINT, BYTES = 0, 2


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _put_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fields(msg: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of a message made of varints and length-delimited fields only."""
    out: list[tuple[int, int, int | bytes]] = []
    i = 0
    while i < len(msg):
        key, i = _varint(msg, i)
        number, kind = key >> 3, key & 7
        if kind == VARINT:
            value, i = _varint(msg, i)
            out.append((number, kind, value))
        elif kind == BYTES:
            size, i = _varint(msg, i)
            if i + size > len(msg):
                raise ValueError("truncated field")
            out.append((number, kind, msg[i:i + size]))
            i += size
        else:
            raise ValueError(f"unexpected wire type {kind}")
    return out


def encode(items: list[tuple[int, int, int | bytes]]) -> bytes:
    out = bytearray()
    for number, kind, value in items:
        out += _put_varint(number << 3 | kind)
        if kind == VARINT:
            assert isinstance(value, int)
            out += _put_varint(value)
        else:
            assert isinstance(value, bytes)
            out += _put_varint(len(value)) + value
    return bytes(out)


def _entries(path: Path) -> tuple[bytes, list[bytes]]:
    data = path.read_bytes()
    head, i, out = data[:8], 8, []
    while i < len(data):
        (size,) = struct.unpack_from("<I", data, i)
        out.append(data[i + 4:i + 4 + size])
        i += 4 + size
    return head, out


def _write(path: Path, head: bytes, entries: list[bytes]) -> None:
    path.write_bytes(head + b"".join(struct.pack("<I", len(e)) + e for e in entries))


def remap_userns(path: Path, old_base: int, new_base: int, count: int) -> None:
    """Every extent of the uid and gid maps that lies in [old_base, old_base + count) moves to new_base."""
    head, entries = _entries(path)
    out = []
    for entry in entries:
        items = []
        for number, kind, value in fields(entry):
            if number in (1, 2) and isinstance(value, bytes):
                ext = {n: v for n, _, v in fields(value)}
                lower = ext.get(2)
                if not isinstance(lower, int) or not old_base <= lower < old_base + count:
                    raise ValueError(f"an id map extent outside the sandbox's range: {ext}")
                ext[2] = lower - old_base + new_base
                value = encode([(n, VARINT, v) for n, v in sorted(ext.items()) if isinstance(v, int)])
            items.append((number, kind, value))
        out.append(encode(items))
    _write(path, head, out)


def rename_uts(path: Path, hostname: str) -> None:
    head, entries = _entries(path)
    out = [encode([(n, k, hostname.encode() if n == 1 else v) for n, k, v in fields(e)]) for e in entries]
    _write(path, head, out)
