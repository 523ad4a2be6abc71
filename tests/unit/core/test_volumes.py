"""Volumes without HTTP: mount paths and names are checked, the service keeps volumes per team (both
databases, revision 0011), and the content API's file layer never leaves a volume's dir."""
from __future__ import annotations

import os
import stat

import pytest
import sqlalchemy as sa

from sandboxd.config import Settings
from sandboxd.core.lifecycle import CreateRequest
from sandboxd.core.store import db
from sandboxd.core.volumefs import Ids, VolumeFiles
from sandboxd.core.volumes import check_mount_path, check_name
from sandboxd.errors import Conflict, Invalid, NotFound, Unauthorized
from sandboxd.wiring import ControlPlane
from support.database import insert_running_sandbox


@pytest.mark.parametrize("path", ["/data", "/mnt/vol", "/home/user/work", "/workspace/v", "/var/data", "/optional",
                                  "/etcetera", "/srv/a-b_c.d"])
def test_good_mount_paths(path):
    assert check_mount_path(path) == path


@pytest.mark.parametrize("path", ["", "data", "./data", "/", "//data", "/data/", "/data/.", "/a/../b", "/a//b",
                                  "/proc", "/proc/x", "/sys", "/dev", "/dev/shm", "/etc", "/etc/app", "/usr",
                                  "/usr/local/x", "/bin", "/sbin", "/lib", "/lib64", "/boot", "/run", "/var/run",
                                  "/opt", "/opt/sandboxd", "/var", "/x\0y", "/" + "a" * 2000, None, 3])
def test_bad_mount_paths(path):
    with pytest.raises(Invalid) as err:
        check_mount_path(path)
    assert err.value.code == "invalid_mount_path"


@pytest.mark.parametrize("name", ["", "-a", ".a", "a/b", "a b", "a" * 64, "é", None])
def test_bad_names(name):
    with pytest.raises(Invalid):
        check_name(name)


@pytest.fixture
def plane(tmp_path, db_url):
    svc = ControlPlane.build(Settings(data_dir=tmp_path / "data", backend="fake", database_url=db_url))
    yield svc
    svc.store.engine.dispose()


def test_volumes_belong_to_a_team(plane):
    vols = plane.volumes
    a = vols.create("team_a", "shared")
    b = vols.create("team_b", "shared")  # names are unique per team only
    with pytest.raises(Conflict):
        vols.create("team_a", "shared")
    assert [v.id for v in vols.list("team_a")] == [a.id]
    assert {v.id for v in vols.list(None)} >= {a.id, b.id}  # the operator's scope: every team's
    with pytest.raises(NotFound):
        vols.get(a.id, "team_b")
    with pytest.raises(NotFound):
        vols.delete(a.id, "team_b")
    assert vols.dir(a.id).is_dir() and vols.dir(a.id).parent == plane.settings.data_dir / "volumes"
    assert vols.check_token(a.id, vols.token(a.id)).id == a.id
    for token in (vols.token(b.id), "", None, vols.token(a.id) + "x"):
        with pytest.raises(Unauthorized):
            vols.check_token(a.id, token)
    with pytest.raises(Invalid):
        vols.resolve("team_a", [("nope", "/data")])
    with pytest.raises(Invalid):
        vols.resolve("team_a", [("shared", "/data"), ("shared", "/data/sub")])  # overlapping paths
    assert vols.count("team_a") == 1


def test_a_mounted_volume_cannot_be_deleted_until_its_sandbox_is_killed(plane):
    import asyncio

    vol = plane.volumes.create("team_default", "work")
    mounts = plane.volumes.resolve("team_default", [("work", "/mnt/work")])

    async def run() -> None:
        await plane.start()
        try:
            sb, _, _ = await plane.lifecycle.create(CreateRequest(template_name="base", volume_mounts=mounts))
            assert plane.lifecycle.get(sb.id).volume_mounts == [{"volume_id": vol.id, "name": "work",
                                                                 "path": "/mnt/work"}]
            link = plane.settings.sandboxes_dir / sb.id / "root" / "mnt" / "work"
            assert link.resolve() == plane.volumes.dir(vol.id).resolve()
            await plane.lifecycle.pause(sb.id)
            with pytest.raises(Conflict) as err:
                plane.volumes.delete(vol.id)
            assert err.value.code == "volume_in_use"
            await plane.lifecycle.kill(sb.id)
            plane.volumes.delete(vol.id)
            assert not plane.volumes.dir(vol.id).exists()
        finally:
            await plane.stop()

    asyncio.run(run())


def test_revision_0011_adds_volumes_to_existing_databases(db_url):
    engine = db.make_engine(db_url)
    db.upgrade(engine, "0010_egress_policy")
    insert_running_sandbox(engine, "sbold")
    db.upgrade(engine)
    with engine.connect() as c:
        assert c.execute(sa.text("select volume_mounts from sandboxes where id = 'sbold'")).scalar() is None
        assert c.execute(sa.text("select count(*) from volumes")).scalar() == 0
    from alembic import command

    command.downgrade(db.alembic_config(engine), "0010_egress_policy")
    assert "volumes" not in sa.inspect(engine).get_table_names()
    engine.dispose()


@pytest.fixture
def files(tmp_path):
    root = tmp_path / "vol"
    root.mkdir()
    return root, VolumeFiles(root, Ids(os.geteuid(), 65536), 0)


def test_files_never_leave_the_volume(files, tmp_path):
    root, fs = files
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host")
    os.symlink(outside, root / "link")
    os.symlink(outside / "secret", root / "file-link")
    os.mkfifo(root / "fifo")
    for path in ("/link/secret", "link/secret"):
        with pytest.raises(Invalid):
            fs.open_file(path)
        with pytest.raises(Invalid):
            fs.list_dir("/link")
        with pytest.raises(Invalid):
            fs.begin_write(path, None, None, None, None)
    for path in ("/file-link", "/fifo", "/"):
        with pytest.raises(Invalid):
            fs.open_file(path)  # a symlink is ELOOP, a FIFO no regular file: neither blocks nor follows
    with pytest.raises(Invalid):
        fs.open_file("/../outside/secret")
    with pytest.raises(Invalid):
        fs.update("/file-link", None, None, 0o777)
    assert stat.S_IMODE(os.stat(outside / "secret").st_mode) != 0o777
    assert fs.stat("/file-link")["target"] == str(outside / "secret")
    fs.remove("/link")
    assert (outside / "secret").read_text() == "host" and not os.path.lexists(root / "link")


def test_write_read_and_list(files):
    root, fs = files
    up = fs.begin_write("/a/b/c.txt", None, None, 0o600, None)
    up.write(b"x" * 10)
    entry = up.commit()
    assert (entry["path"], entry["size"], entry["mode"], entry["type"]) == ("/a/b/c.txt", 10, 0o600, "file")
    assert [p for p in os.listdir(root / "a" / "b")] == ["c.txt"]  # no upload leftovers
    fd, size = fs.open_file("/a/b/c.txt")
    os.close(fd)
    assert size == 10
    with pytest.raises(Conflict):
        fs.begin_write("/a/b/c.txt", None, None, None, False)
    with pytest.raises(Invalid):
        fs.list_dir("/", depth=0)
    assert [e["path"] for e in fs.list_dir("/", depth=3)] == ["/a", "/a/b", "/a/b/c.txt"]
    assert [e["path"] for e in fs.list_dir("/a", depth=1)] == ["/a/b"]
    with pytest.raises(NotFound):
        fs.stat("/nope")
    with pytest.raises(Invalid):
        fs.make_dir("/x", 70000, None, None, False)  # outside the sandbox's id range


def test_a_team_with_volumes_is_not_deleted(plane):
    from sandboxd.core.teams import TeamService

    teams = TeamService(plane.store)
    team = teams.create("vol-owner")
    vol = plane.volumes.create(team.id, "kept")
    assert teams.show(team.id)[1].to_wire()["volumes"] == 1
    with pytest.raises(Conflict) as err:
        teams.delete(team.id)
    assert err.value.code == "team_not_empty" and "1 volume" in err.value.message
    plane.volumes.delete(vol.id, team.id)
    assert teams.delete(team.id).id == team.id


def test_a_create_naming_a_volume_deleted_since_is_refused(plane):
    import asyncio

    plane.volumes.create("team_default", "gone")
    mounts = plane.volumes.resolve("team_default", [("gone", "/mnt/gone")])
    plane.volumes.delete(mounts[0].volume_id)

    async def run() -> None:
        await plane.start()
        try:
            with pytest.raises(Invalid) as err:
                await plane.lifecycle.create(CreateRequest(template_name="base", volume_mounts=mounts))
            assert err.value.code == "volume_not_found"
        finally:
            await plane.stop()

    asyncio.run(run())
