"""Snapshots through the official `e2b` SDK: a sandbox's files saved as a template that new sandboxes start
from, listed by sandbox and by name, deleted once (a second delete says it was not there)."""
from __future__ import annotations


def _files_carry_over(env) -> bool:
    return env["backend"] != "fake"  # the fake backend's sandboxes share the host's files: no image to keep


def test_a_snapshot_starts_new_sandboxes_with_the_files_and_the_source_runs_on(e2b_env, sandbox):
    from e2b import Sandbox

    sandbox.files.write("/home/user/note.txt", "written before the snapshot")
    sandbox.commands.run("mkdir -p /home/user/app && echo 1 > /home/user/app/a")
    if _files_carry_over(e2b_env):  # never on the fake backend: its commands run on the host
        assert sandbox.commands.run("rm /etc/debian_version", user="root").exit_code == 0  # a file of the image
    snap = sandbox.create_snapshot()
    try:
        assert snap.snapshot_id and snap.names and all(n.endswith(":default") for n in snap.names)
        assert sandbox.is_running()
        assert sandbox.commands.run("echo still here").stdout.strip() == "still here"
        one, two = Sandbox.create(snap.snapshot_id, timeout=120), Sandbox.create(snap.snapshot_id, timeout=120)
        try:
            if _files_carry_over(e2b_env):
                assert one.files.read("/home/user/note.txt") == "written before the snapshot"
                assert two.commands.run("cat /home/user/app/a").stdout.strip() == "1"
                # A file the source deleted is deleted in the snapshot too (the whiteout is kept).
                assert not one.files.exists("/etc/debian_version")
                one.files.write("/home/user/note.txt", "changed in one")
                assert two.files.read("/home/user/note.txt") == "written before the snapshot"
                # Changes made after the snapshot are not in it.
                sandbox.files.write("/home/user/later.txt", "after")
                assert not one.files.exists("/home/user/later.txt")
        finally:
            one.kill()
            two.kill()
    finally:
        assert Sandbox.delete_snapshot(snap.snapshot_id) is True
    assert Sandbox.delete_snapshot(snap.snapshot_id) is False


def test_snapshots_are_listed_by_sandbox_and_by_name_and_a_name_is_reused(e2b_env, sandbox):
    from e2b import Sandbox

    name = f"snap-{sandbox.sandbox_id[-8:].lower()}"
    first = sandbox.create_snapshot(name=name)
    try:
        assert any(name in n for n in first.names)
        mine = Sandbox.list_snapshots(sandbox_id=sandbox.sandbox_id).next_items()
        assert [s.snapshot_id for s in mine] == [first.snapshot_id]
        assert [s.snapshot_id for s in Sandbox.list_snapshots(name=name).next_items()] == [first.snapshot_id]
        assert [s.snapshot_id for s in Sandbox.list_snapshots(name=f"{name}:default").next_items()] == [first.snapshot_id]
        assert Sandbox.list_snapshots(name=f"{name}-missing").next_items() == []
        everything = Sandbox.list_snapshots()
        assert first.snapshot_id in {s.snapshot_id for s in everything.next_items()}
        # The same name again: the snapshot template gets the new image, not a second template.
        second = sandbox.create_snapshot(name=name)
        assert second.snapshot_id == first.snapshot_id
        assert len(Sandbox.list_snapshots(sandbox_id=sandbox.sandbox_id).next_items()) == 1
    finally:
        Sandbox.delete_snapshot(first.snapshot_id)


def test_paging_and_bad_requests(e2b_env, sandbox):
    import httpx

    api, h = e2b_env["api"], {"X-API-KEY": e2b_env["key"]}
    made = [httpx.post(f"{api}/sandboxes/{sandbox.sandbox_id}/snapshots", json={}, headers=h, timeout=120)
            for _ in range(3)]
    assert [r.status_code for r in made] == [201, 201, 201]
    ids = [r.json()["snapshotID"] for r in made]
    try:
        r = httpx.get(f"{api}/snapshots", params={"sandboxID": sandbox.sandbox_id, "limit": 2}, headers=h)
        assert r.status_code == 200 and len(r.json()) == 2 and r.headers["x-next-token"]
        rest = httpx.get(f"{api}/snapshots", params={"sandboxID": sandbox.sandbox_id, "limit": 2,
                                                     "nextToken": r.headers["x-next-token"]}, headers=h)
        assert len(rest.json()) == 1 and "x-next-token" not in rest.headers
        assert {s["snapshotID"] for s in r.json() + rest.json()} == set(ids)
        bad = httpx.get(f"{api}/snapshots", params={"nextToken": "x"}, headers=h)
        assert bad.status_code == 400 and bad.json()["code"] == 400
        for body, status in (({"name": "Not A Name"}, 400), ({"name": "base"}, 400)):
            r = httpx.post(f"{api}/sandboxes/{sandbox.sandbox_id}/snapshots", json=body, headers=h)
            assert r.status_code == status, r.text
        assert httpx.post(f"{api}/sandboxes/nope/snapshots", json={}, headers=h).status_code == 404
    finally:
        for sid in ids:
            assert httpx.delete(f"{api}/templates/{sid}", headers=h).status_code == 204


def test_a_paused_sandbox_is_snapshotted_and_stays_paused(e2b_env, sandbox):
    from e2b import Sandbox

    sandbox.files.write("/home/user/p.txt", "paused")
    sandbox.pause()
    snap = Sandbox.create_snapshot(sandbox.sandbox_id)
    try:
        assert not sandbox.is_running()
        if _files_carry_over(e2b_env):
            other = Sandbox.create(snap.snapshot_id, timeout=120)
            try:
                assert other.files.read("/home/user/p.txt") == "paused"
            finally:
                other.kill()
    finally:
        Sandbox.delete_snapshot(snap.snapshot_id)


def _fork_images() -> set[str]:
    from support.real import TEMPLATES_DIR  # the image store a crun-backed server shares

    return {p.name for p in (TEMPLATES_DIR / "images").glob("fork-*.json")}


def test_forks_start_on_a_copy_of_the_files_and_their_copy_goes_with_the_last(e2b_env, sandbox):
    import httpx
    from e2b import Sandbox
    from support.waiting import wait_for

    real = _files_carry_over(e2b_env)
    sandbox.files.write("/home/user/state.txt", "before the fork")
    before = _fork_images() if real else set()
    forks = sandbox.fork(count=2, timeout=60)
    assert len(forks) == 2 and all(isinstance(f, Sandbox) for f in forks)
    api, h = e2b_env["api"], {"X-API-KEY": e2b_env["key"]}
    try:
        assert sandbox.is_running() and all(f.is_running() for f in forks)
        assert len({f.sandbox_id for f in forks} | {sandbox.sandbox_id}) == 3
        # The copy is nobody's template: not listed, not a snapshot.
        assert not [t for t in httpx.get(f"{api}/templates", headers=h).json() if "fork" in str(t)]
        assert Sandbox.list_snapshots(sandbox_id=sandbox.sandbox_id).next_items() == []
        if real:
            assert [f.files.read("/home/user/state.txt") for f in forks] == ["before the fork"] * 2
            forks[0].files.write("/home/user/state.txt", "changed in a fork")
            assert sandbox.files.read("/home/user/state.txt") == "before the fork"
            assert forks[1].files.read("/home/user/state.txt") == "before the fork"
            # Other workers' servers share the image store and may fork meanwhile: ours is the one our forks
            # run from (their alias is the copy's name).
            names = {httpx.get(f"{api}/sandboxes/{f.sandbox_id}", headers=h).json()["alias"] for f in forks}
            assert len(names) == 1
            copy = {f"{names.pop()}.json"}
            assert copy <= _fork_images() - before
            forks[0].kill()
            assert _fork_images() >= copy  # the other fork still starts from it
            forks[1].kill()
            wait_for(lambda: not (_fork_images() & copy), timeout=30, what="the fork's copy to be removed")
    finally:
        for f in forks:
            f.kill()
    r = httpx.post(f"{api}/sandboxes/nope/fork", json={}, headers=h)
    assert r.status_code == 404
    assert httpx.post(f"{api}/sandboxes/{sandbox.sandbox_id}/fork", json={"count": 0}, headers=h).status_code == 400
    assert httpx.post(f"{api}/sandboxes/{sandbox.sandbox_id}/fork", json={"count": 21}, headers=h).status_code == 400


def test_a_filesystem_only_pause_keeps_the_files_and_boots_afresh(e2b_env, sandbox):
    sandbox.files.write("/home/user/kept.txt", "on disk")
    before = sandbox.files.read("/proc/sys/kernel/random/boot_id").strip()
    sandbox.commands.run("sleep 600", background=True)
    assert sandbox.pause(keep_memory=False)
    assert not sandbox.is_running()
    resumed = sandbox.connect()
    assert resumed.is_running() and resumed.sandbox_id == sandbox.sandbox_id
    assert resumed.files.read("/home/user/kept.txt") == "on disk"
    if _files_carry_over(e2b_env):  # (the fake backend's ps lists the host's processes)
        assert "sleep 600" not in resumed.commands.run("ps -eo args").stdout  # the processes ended
        assert resumed.files.read("/proc/sys/kernel/random/boot_id").strip() != before


def test_another_teams_sandbox_cannot_be_snapshotted_or_forked(e2b_env):
    import httpx

    api, op = e2b_env["api"], {"X-API-KEY": e2b_env["key"]}
    keys = {}
    for team in ("snap-team-a", "snap-team-b"):
        assert httpx.post(f"{api}/v1/teams", json={"name": team}, headers=op).status_code in (201, 409)
        r = httpx.post(f"{api}/v1/api-keys", json={"name": f"{team}-key", "team": team}, headers=op)
        assert r.status_code == 201, r.text
        keys[team] = {"X-API-KEY": r.json()["key"]}
    a, b = keys["snap-team-a"], keys["snap-team-b"]
    r = httpx.post(f"{api}/v2/sandboxes", json={"templateID": "base", "timeout": 60}, headers=a, timeout=120)
    assert r.status_code == 201, r.text
    sid = r.json()["sandboxID"]
    try:
        for path in (f"/sandboxes/{sid}/snapshots", f"/sandboxes/{sid}/fork"):
            assert httpx.post(f"{api}{path}", json={}, headers=b, timeout=120).status_code == 404, path
        snap = httpx.post(f"{api}/sandboxes/{sid}/snapshots", json={}, headers=a, timeout=120).json()["snapshotID"]
        assert snap in [x["snapshotID"] for x in httpx.get(f"{api}/snapshots", headers=a).json()]
        assert snap not in [x["snapshotID"] for x in httpx.get(f"{api}/snapshots", headers=b).json()]
        assert httpx.delete(f"{api}/templates/{snap}", headers=b).status_code == 404
        assert httpx.delete(f"{api}/templates/{snap}", headers=a).status_code == 204
        r = httpx.post(f"{api}/sandboxes/{sid}/fork", json={}, headers=a, timeout=120)
        assert r.status_code == 201 and "sandbox" in r.json()[0], r.text
        fork = r.json()[0]["sandbox"]["sandboxID"]
        assert httpx.get(f"{api}/sandboxes/{fork}", headers=a).status_code == 200  # the fork is the team's
        assert httpx.get(f"{api}/sandboxes/{fork}", headers=b).status_code == 404
        assert httpx.delete(f"{api}/sandboxes/{fork}", headers=a).status_code == 204
    finally:
        httpx.delete(f"{api}/sandboxes/{sid}", headers=a)
