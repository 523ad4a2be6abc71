"""What envd reports about a file, beyond its name: permission bits, symlinks, user metadata kept in
`user.e2b.*` extended attributes, removing what is absent, and which directories a watch may take."""
from __future__ import annotations

import os

from sandboxd.agent.watch import network_filesystem

F = "/e2b/49983/filesystem.Filesystem"
FILES = "/e2b/49983/files"


async def _stat(client, path) -> dict:
    r = await client.post(f"{F}/Stat", json={"path": str(path)})
    assert r.status_code == 200, r.text
    return r.json()["entry"]


async def test_mode_is_the_permission_bits_and_names_are_resolved(agent):
    client, tmp, _ = agent
    (tmp / "d").mkdir(mode=0o750)
    os.chmod(tmp / "d", 0o750)
    e = await _stat(client, tmp / "d")
    assert (e["type"], e["mode"], e["permissions"]) == ("FILE_TYPE_DIRECTORY", 0o750, "drwxr-x---")
    assert e["owner"] and not e["owner"].isdigit() and e["group"]
    (tmp / "f").write_text("abc")
    os.chmod(tmp / "f", 0o640)
    e = await _stat(client, tmp / "f")
    assert (e["mode"], e["permissions"], e["size"]) == (0o640, "-rw-r-----", "3")
    assert "symlinkTarget" not in e and "metadata" not in e


async def test_a_symlink_reports_its_target(agent):
    client, tmp, _ = agent
    (tmp / "real.txt").write_text("x")
    (tmp / "real").mkdir()
    os.symlink("real.txt", tmp / "to-file")
    os.symlink(tmp / "real", tmp / "to-dir")
    os.symlink("nowhere", tmp / "dangling")
    to_file, to_dir = await _stat(client, tmp / "to-file"), await _stat(client, tmp / "to-dir")
    assert (to_file["type"], to_file["symlinkTarget"]) == ("FILE_TYPE_FILE", str(tmp / "real.txt"))
    assert (to_dir["type"], to_dir["symlinkTarget"]) == ("FILE_TYPE_DIRECTORY", str(tmp / "real"))
    assert "isSymlink" not in to_file  # the SDK would then call it a symlink, not what it points to
    assert (await _stat(client, tmp / "dangling"))["type"] == "FILE_TYPE_SYMLINK"


async def test_upload_metadata_is_kept_in_xattrs_and_reported(agent):
    client, tmp, _ = agent
    meta = {"X-Metadata-Author": "ann", "x-metadata-purpose": "upload test"}
    r = await client.post(FILES, params={"path": "m.txt"}, content=b"one",
                          headers={"content-type": "application/octet-stream", **meta})
    assert r.status_code == 200, r.text
    want = {"author": "ann", "purpose": "upload test"}  # keys are lowercased
    assert r.json()[0]["metadata"] == want
    assert os.getxattr(tmp / "m.txt", "user.e2b.author") == b"ann"
    assert (await _stat(client, tmp / "m.txt"))["metadata"] == want
    listed = (await client.post(f"{F}/ListDir", json={"path": str(tmp)})).json()["entries"]
    assert [e.get("metadata") for e in listed if e["name"] == "m.txt"] == [want]
    moved = (await client.post(f"{F}/Move", json={"source": "m.txt", "destination": "n.txt"})).json()["entry"]
    assert moved["metadata"] == want
    # Every part of a multipart upload gets the request's metadata.
    r = await client.post(FILES, files=[("file", ("p1.txt", b"1")), ("file", ("p2.txt", b"2"))],
                          headers={"x-metadata-source": "parts"})
    assert [w["metadata"] for w in r.json()] == [{"source": "parts"}] * 2
    assert (await _stat(client, tmp / "p2.txt"))["metadata"] == {"source": "parts"}


async def test_overwriting_without_metadata_clears_it_and_outside_xattrs_show(agent):
    client, tmp, _ = agent
    octet = {"content-type": "application/octet-stream"}
    await client.post(FILES, params={"path": "o.txt"}, content=b"1", headers={**octet, "x-metadata-k": "v"})
    r = await client.post(FILES, params={"path": "o.txt"}, content=b"2", headers=octet)
    assert "metadata" not in r.json()[0]
    assert "metadata" not in await _stat(client, tmp / "o.txt")
    os.setxattr(tmp / "o.txt", "user.e2b.made-by", b"setfattr")
    os.setxattr(tmp / "o.txt", "user.other", b"ignored")
    assert (await _stat(client, tmp / "o.txt"))["metadata"] == {"made-by": "setfattr"}


async def test_bad_metadata_is_refused_before_writing(agent):
    client, tmp, _ = agent
    for headers in ({"x-metadata-k": "caf\u00e9".encode("latin-1")}, {"x-metadata-": "empty key"}):
        r = await client.post(FILES, params={"path": "bad.txt"}, content=b"x",
                              headers={"content-type": "application/octet-stream", **headers})
        assert r.status_code == 400 and r.json()["code"] == 400
    assert not (tmp / "bad.txt").exists()


async def test_removing_a_missing_path_succeeds(agent):
    client, tmp, _ = agent
    r = await client.post(f"{F}/Remove", json={"path": str(tmp / "never-was")})
    assert r.status_code == 200 and r.json() == {}


async def test_watch_refuses_network_mounts_unless_allowed(agent, tmp_path, monkeypatch):
    client, tmp, _ = agent
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/vda / ext4 rw 0 0\nsrv:/x {tmp} nfs4 rw 0 0\n")
    assert network_filesystem(str(tmp / "sub"), str(mounts)) == "nfs4"
    assert network_filesystem("/usr", str(mounts)) is None
    import sandboxd.agent.watch as watch

    monkeypatch.setattr(watch, "network_filesystem", lambda path: network_filesystem(path, str(mounts)))
    r = await client.post(f"{F}/CreateWatcher", json={"path": str(tmp)})
    assert r.status_code == 400 and "network filesystem" in r.json()["message"]
    r = await client.post(f"{F}/CreateWatcher", json={"path": str(tmp), "allowNetworkMounts": True})
    assert r.status_code == 200
    await client.post(f"{F}/RemoveWatcher", json={"watcherId": r.json()["watcherId"]})
