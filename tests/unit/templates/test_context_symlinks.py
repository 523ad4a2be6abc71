"""A build context's symlinks that point out of it are kept as symlinks (a COPY copies them as they are), and
made last, so no member is ever written through one."""
from __future__ import annotations

import io
import os
import tarfile

import pytest

from sandboxd.errors import Invalid
from sandboxd.templates import context


def tar_of(tmp_path, members, name="c.tar.gz"):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for path, kind, value in members:
            info = tarfile.TarInfo(path)
            if kind == "file":
                data = value.encode()
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else:
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.DIRTYPE
                info.linkname = value or ""
                t.addfile(info)
    (tmp_path / name).write_bytes(buf.getvalue())
    return tmp_path / name


def test_outward_symlinks_are_kept_verbatim(tmp_path):
    ctx = tar_of(tmp_path, [("folder", "dir", None), ("folder/a.txt", "file", "hi"), ("folder/rel", "symlink", "a.txt"),
                            ("folder/abs", "symlink", "/etc/passwd"), ("folder/up", "symlink", "../../x")])
    out = context.materialize(ctx, tmp_path / "scratch") / "folder"
    assert {p.name: os.readlink(p) for p in out.iterdir() if p.is_symlink()} == {
        "rel": "a.txt", "abs": "/etc/passwd", "up": "../../x"}
    assert (out / "a.txt").read_text() == "hi"
    entries = context.matches(out.parent, "folder/*")
    assert len(entries) == 4 and context.content_hash(entries, out.parent)


@pytest.mark.parametrize("members", [
    [("esc", "symlink", "OUT"), ("esc/passwd", "file", "x")],  # a file written through an outward link
    [("esc", "symlink", "OUT"), ("esc/x", "symlink", "/etc")],  # a link made through one
])
def test_nothing_is_written_through_an_outward_symlink(tmp_path, members):
    outside = tmp_path / "outside"
    outside.mkdir()
    members = [(p, k, str(outside) if v == "OUT" else v) for p, k, v in members]
    with pytest.raises(Invalid) as err:
        context.materialize(tar_of(tmp_path, members), tmp_path / "scratch")
    assert err.value.code == "invalid_context"
    assert list(outside.iterdir()) == []
