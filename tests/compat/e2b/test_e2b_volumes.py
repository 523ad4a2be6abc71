"""Volumes through the official SDK (`e2b.Volume`, `Sandbox.create(volume_mounts=...)`): a team's persistent
directory outlives the sandboxes that mount it; the content API opens one volume per token and never
leaves the volume's dir, whatever a sandbox planted in it."""
from __future__ import annotations

import os
import uuid

import httpx
import pytest
from e2b import Sandbox, Volume
from e2b.exceptions import AuthenticationException, NotFoundException, SandboxException, VolumeException


@pytest.fixture
def content_api(e2b_env):
    """The SDK sends volume content requests to E2B_VOLUME_API_URL: the control plane here."""
    saved = os.environ.get("E2B_VOLUME_API_URL")
    os.environ["E2B_VOLUME_API_URL"] = e2b_env["api"]
    yield e2b_env
    if saved is None:
        os.environ.pop("E2B_VOLUME_API_URL", None)
    else:
        os.environ["E2B_VOLUME_API_URL"] = saved


@pytest.fixture
def volume(content_api):
    vol = Volume.create(f"vol-{uuid.uuid4().hex[:8]}")
    yield vol
    Volume.destroy(vol.volume_id)


def test_files_written_in_one_sandbox_are_there_in_the_next(volume, content_api):
    real = content_api["backend"] != "fake"
    first = Sandbox.create(timeout=120, volume_mounts={"/mnt/data": volume})
    try:
        assert first.get_info().volume_mounts == [{"name": volume.name, "path": "/mnt/data"}]
        if not real:
            pytest.skip("the fake backend has no mount namespace: /mnt/data is not the volume there")
        # As the template's user (uid 1000) and as root: the next sandbox runs in another uid range.
        first.commands.run("echo from-user > /mnt/data/user.txt && mkdir /mnt/data/sub")
        first.commands.run("echo from-root > /mnt/data/sub/root.txt", user="root")
        with pytest.raises(VolumeException):
            Volume.destroy(volume.volume_id)  # mounted by a live sandbox: refused
    finally:
        first.kill()
    second = Sandbox.create(timeout=120, volume_mounts={"/home/user/vol": volume.name})
    try:
        assert second.files.read("/home/user/vol/user.txt") == "from-user\n"
        assert second.files.read("/home/user/vol/sub/root.txt") == "from-root\n"
        owners = second.commands.run("stat -c '%U %G' /home/user/vol/user.txt /home/user/vol/sub/root.txt").stdout
        assert owners.split("\n")[:2] == ["user user", "root root"]
        second.commands.run("echo more >> /home/user/vol/user.txt")  # the user still owns what it wrote
        second.pause()
        again = second.connect()
        assert again.files.read("/home/user/vol/user.txt") == "from-user\nmore\n"
        # A filesystem-only pause ends its processes; the boot after it mounts the volume again.
        r = httpx.post(f"{content_api['api']}/sandboxes/{second.sandbox_id}/pause", json={"memory": False},
                       headers={"X-API-KEY": content_api["key"]})
        assert r.status_code == 204, r.text
        again = second.connect()
        assert again.files.read("/home/user/vol/sub/root.txt") == "from-root\n"
        # What the sandbox wrote, the content API reads, with the sandbox's ids.
        assert volume.read_file("/user.txt") == "from-user\nmore\n"
        info = volume.get_info("/sub/root.txt")
        assert (info.uid, info.gid, info.size) == (0, 0, len("from-root\n"))
    finally:
        second.kill()


def test_the_content_api_round_trip(volume):
    entry = volume.write_file("/notes/a.txt", "hello", mode=0o640)
    assert (entry.name, entry.path, entry.size, entry.mode, entry.uid) == ("a.txt", "/notes/a.txt", 5, 0o640, 1000)
    assert volume.read_file("/notes/a.txt") == "hello"
    assert volume.read_file("/notes/a.txt", format="bytes") == b"hello"
    assert b"".join(volume.read_file("/notes/a.txt", format="stream")) == b"hello"
    with pytest.raises(VolumeException):
        volume.write_file("/notes/a.txt", "again", force=False)
    volume.write_file("/notes/a.txt", "replaced", force=True)
    assert volume.read_file("/notes/a.txt") == "replaced"
    d = volume.make_dir("/deep/er/dir", force=True, uid=1001, gid=1001, mode=0o750)
    assert (d.type.value, d.uid, d.mode) == ("directory", 1001, 0o750)
    with pytest.raises(VolumeException):
        volume.make_dir("/deep/er/dir")
    listed = {e.path: e.type.value for e in volume.list("/", depth=3)}
    assert listed == {"/notes": "directory", "/notes/a.txt": "file", "/deep": "directory",
                      "/deep/er": "directory", "/deep/er/dir": "directory"}
    updated = volume.update_metadata("/notes/a.txt", uid=1002, mode=0o600)
    assert (updated.uid, updated.gid, updated.mode) == (1002, 1000, 0o600)
    assert volume.exists("/notes/a.txt") and not volume.exists("/missing")
    volume.remove("/deep")
    assert not volume.exists("/deep/er")
    with pytest.raises(NotFoundException):
        volume.read_file("/deep/er/dir/x")
    with pytest.raises(VolumeException):
        volume.read_file("/../etc/passwd")


def test_a_token_opens_its_own_volume_only(volume, content_api):
    other = Volume.create(f"vol-{uuid.uuid4().hex[:8]}")
    try:
        other.write_file("/secret.txt", "b's")
        # A's token on B's volume id.
        thief = Volume(other.volume_id, other.name, token=volume.token)
        with pytest.raises(AuthenticationException):
            thief.read_file("/secret.txt")
        r = httpx.get(f"{content_api['api']}/volumecontent/{other.volume_id}/file", params={"path": "/secret.txt"},
                      headers={"Authorization": f"Bearer {volume.token}"})
        assert r.status_code == 401
        r = httpx.get(f"{content_api['api']}/volumecontent/{other.volume_id}/file", params={"path": "/secret.txt"},
                      headers={"X-API-KEY": content_api["key"]})  # the API key is no volume token either
        assert r.status_code == 401
        assert Volume.get_info(other.volume_id).token == other.token  # the same token on every look-up
    finally:
        Volume.destroy(other.volume_id)


def test_another_team_sees_no_volume(volume, content_api):
    api, op = content_api["api"], {"X-API-KEY": content_api["key"]}
    assert httpx.post(f"{api}/v1/teams", json={"name": "vol-team-b"}, headers=op).status_code in (201, 409)
    r = httpx.post(f"{api}/v1/api-keys", json={"name": "vol-team-b-key", "team": "vol-team-b"}, headers=op)
    assert r.status_code == 201, r.text
    b = {"X-API-KEY": r.json()["key"]}
    assert httpx.get(f"{api}/volumes/{volume.volume_id}", headers=b).status_code == 404
    assert volume.volume_id not in [v["volumeID"] for v in httpx.get(f"{api}/volumes", headers=b).json()]
    assert httpx.delete(f"{api}/volumes/{volume.volume_id}", headers=b).status_code == 404
    r = httpx.post(f"{api}/v2/sandboxes", headers=b, json={
        "templateID": "base", "volumeMounts": [{"name": volume.name, "path": "/mnt/v"}]})
    assert r.status_code == 400 and "does not exist" in r.json()["message"]
    # Team B may use the same name for a volume of its own.
    r = httpx.post(f"{api}/volumes", headers=b, json={"name": volume.name})
    assert r.status_code == 201 and r.json()["volumeID"] != volume.volume_id
    assert httpx.delete(f"{api}/volumes/{r.json()['volumeID']}", headers=b).status_code == 204
    assert volume.volume_id in [v.volume_id for v in Volume.list()]


def test_names_are_checked_and_unique(content_api):
    api, key = content_api["api"], {"X-API-KEY": content_api["key"]}
    for bad in ("", "../x", "a/b", "-lead", "x" * 64):
        r = httpx.post(f"{api}/volumes", headers=key, json={"name": bad})
        assert r.status_code == 400 and r.json()["error_code"] == "invalid_volume_name", bad
    vol = Volume.create("unique-name")
    try:
        with pytest.raises(VolumeException):
            Volume.create("unique-name")
    finally:
        assert Volume.destroy(vol.volume_id)
    assert not Volume.destroy(vol.volume_id)  # gone: a 404


def test_a_planted_symlink_is_not_followed(volume, content_api):
    """A sandbox can put any symlink in its volume; the host-side content API must not follow it out."""
    vdir = content_api["data"] / "volumes" / volume.volume_id
    os.symlink("/etc/passwd", vdir / "passwd")
    os.symlink("/etc", vdir / "etc")
    os.mkfifo(vdir / "pipe")
    entry = volume.get_info("/passwd")
    assert (entry.type.value, entry.target) == ("symlink", "/etc/passwd")
    for path in ("/passwd", "/etc/passwd", "/pipe"):
        with pytest.raises(VolumeException):
            volume.read_file(path)
    with pytest.raises(VolumeException):
        volume.list("/etc")
    with pytest.raises(VolumeException):
        volume.write_file("/etc/owned", "x")
    with pytest.raises(VolumeException):
        volume.update_metadata("/passwd", mode=0o777)
    before = os.stat("/etc/passwd")
    volume.write_file("/passwd", "replaced")  # replaces the link itself
    assert os.stat("/etc/passwd") == before and not (vdir / "passwd").is_symlink()
    volume.remove("/etc")
    assert os.path.isdir("/etc") and not os.path.lexists(vdir / "etc")


@pytest.mark.parametrize("path", ["relative", "/", "/proc", "/etc/app", "/usr", "/opt", "/mnt/../etc", "/mnt/x/",
                                  "/dev/shm"])
def test_bad_mount_paths_are_a_400(volume, path):
    with pytest.raises(SandboxException) as err:
        Sandbox.create(timeout=60, volume_mounts={path: volume})
    assert "400" in str(err.value) or "mount" in str(err.value)


def test_an_unknown_volume_is_a_400(content_api):
    r = httpx.post(f"{content_api['api']}/v2/sandboxes", headers={"X-API-KEY": content_api["key"]},
                   json={"templateID": "base", "volumeMounts": [{"name": "no-such-volume", "path": "/mnt/v"}]})
    assert r.status_code == 400 and r.json()["error_code"] == "volume_not_found"
