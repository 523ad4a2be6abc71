"""Connect envelope helpers for the envd protocol tests."""
from __future__ import annotations

import json
import struct


def envelope(msg: dict, flags: int = 0) -> bytes:
    data = json.dumps(msg).encode()
    return struct.pack(">BI", flags, len(data)) + data


def parse_envelopes(raw: bytes) -> list[tuple[int, dict]]:
    out, i = [], 0
    while i < len(raw):
        flags, n = struct.unpack(">BI", raw[i:i + 5])
        out.append((flags, json.loads(raw[i + 5:i + 5 + n])))
        i += 5 + n
    assert i == len(raw), "trailing bytes after the last envelope"
    return out


STREAM = {"content-type": "application/connect+json", "connect-protocol-version": "1"}
