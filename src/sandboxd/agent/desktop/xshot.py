"""Screenshots without a helper process: one X11 GetImage over the display's unix socket, encoded as
PNG with zlib. ~5x faster than starting ffmpeg per screenshot (the hot path of computer-use loops).

Handles the common case only (little-endian 24/32-bit TrueColor, as Xvnc serves); anything else
returns None and the caller falls back to ffmpeg.
"""
from __future__ import annotations

import socket
import struct
import zlib


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("X server closed the connection")
        got += k
    return bytes(buf)


def _pad(n: int) -> int:
    return (4 - n % 4) % 4


def grab(display_number: int, region: tuple[int, int, int, int] | None = None, timeout: float = 10.0) -> bytes | None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(f"/tmp/.X11-unix/X{display_number}")
        sock.sendall(b"l\x00" + struct.pack("<HHHH2x", 11, 0, 0, 0))  # no auth: like xdotool, local access
        head = _recv(sock, 8)
        extra = _recv(sock, struct.unpack("<H", head[6:8])[0] * 4)
        if head[0] != 1:
            return None
        vendor_len, = struct.unpack_from("<H", extra, 16)
        n_screens, n_formats, byte_order = extra[20], extra[21], extra[22]
        if byte_order != 0 or n_screens < 1:
            return None
        off = 32 + vendor_len + _pad(vendor_len)
        bpp_by_depth = {}
        for i in range(n_formats):
            depth, bpp = extra[off + 8 * i], extra[off + 8 * i + 1]
            bpp_by_depth[depth] = bpp
        off += 8 * n_formats
        root, = struct.unpack_from("<I", extra, off)
        sw, sh = struct.unpack_from("<HH", extra, off + 20)
        root_depth = extra[off + 38]
        if root_depth != 24 or bpp_by_depth.get(24) != 32:
            return None
        x, y, w, h = region or (0, 0, sw, sh)
        sock.sendall(struct.pack("<BBHIhhHHI", 73, 2, 5, root, x, y, w, h, 0xFFFFFFFF))  # GetImage, ZPixmap
        reply = _recv(sock, 32)
        if reply[0] != 1:
            return None  # an X error (e.g. BadMatch for a region off screen)
        data = _recv(sock, struct.unpack_from("<I", reply, 4)[0] * 4)
    if len(data) < w * h * 4:
        return None
    rgb = bytearray(w * h * 3)
    rgb[0::3] = data[2::4]  # BGRX -> RGB
    rgb[1::3] = data[1::4]
    rgb[2::3] = data[0::4]
    stride = w * 3
    raw = b"".join(b"\x00" + rgb[r * stride:(r + 1) * stride] for r in range(h))
    return _png(w, h, zlib.compress(raw, 3))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png(w: int, h: int, idat: bytes) -> bytes:
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
