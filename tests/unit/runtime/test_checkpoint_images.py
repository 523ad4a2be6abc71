"""runtime/oci/images.py: the two CRIU images a memory fork rewrites, read back field by field."""
from __future__ import annotations

import struct

import pytest

from sandboxd.runtime.oci import images

HEAD = struct.pack("<II", 0x54564319, 0x55474906)


def _image(path, *messages: bytes) -> None:
    path.write_bytes(HEAD + b"".join(struct.pack("<I", len(m)) + m for m in messages))


def _extent(first: int, lower: int, count: int) -> bytes:
    return images.encode([(1, images.VARINT, first), (2, images.VARINT, lower), (3, images.VARINT, count)])


def _maps(path) -> list[tuple[int, dict]]:
    data = path.read_bytes()
    assert data[:8] == HEAD
    (size,) = struct.unpack_from("<I", data, 8)
    return [(n, {k: v for k, _, v in images.fields(v)}) for n, _, v in images.fields(data[12:12 + size])]


def test_a_userns_image_moves_to_the_childs_range(tmp_path):
    f = tmp_path / "userns-1.img"
    entry = images.encode([(1, images.BYTES, _extent(0, 1_065_536, 65536)), (2, images.BYTES, _extent(0, 1_065_536, 65536))])
    _image(f, entry)
    images.remap_userns(f, 1_065_536, 2_197_152, 65536)
    assert _maps(f) == [(1, {1: 0, 2: 2_197_152, 3: 65536}), (2, {1: 0, 2: 2_197_152, 3: 65536})]


def test_an_extent_outside_the_sandboxs_range_is_refused(tmp_path):
    f = tmp_path / "userns-1.img"
    _image(f, images.encode([(1, images.BYTES, _extent(0, 0, 1))]))  # host root: never a sandbox's
    with pytest.raises(ValueError):
        images.remap_userns(f, 1_065_536, 2_197_152, 65536)


def test_a_uts_image_takes_the_childs_host_name(tmp_path):
    f = tmp_path / "utsns-1.img"
    _image(f, images.encode([(1, images.BYTES, b"sbparent"), (2, images.BYTES, b"(none)")]))
    images.rename_uts(f, "sbchild")
    data = f.read_bytes()
    (size,) = struct.unpack_from("<I", data, 8)
    assert images.fields(data[12:12 + size]) == [(1, 2, b"sbchild"), (2, 2, b"(none)")]


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**32 - 1, 2**40])
def test_varints_round_trip(value):
    assert images.fields(images.encode([(3, images.VARINT, value)])) == [(3, 0, value)]


def test_garbage_is_a_value_error_not_a_crash():
    for junk in (b"\xff" * 12, b"\x0a\x05ab", b"\x0b"):
        with pytest.raises(ValueError):
            images.fields(junk)
