"""Builds from steps that need no build sandbox (COPY, ENV, WORKDIR, USER): layers, cache, failures."""
import io
import os
import tarfile

import pytest

from sandboxd.errors import BuildFailed, Conflict, Invalid, NotFound
from sandboxd.runtime.fake.backend import FakeBackend
from sandboxd.templates.steps import parse_build_request


def make_context(tmp_path, files):
    ctx = tmp_path / "ctx"
    for rel, data in files.items():
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_text(data)
    return ctx


def tarball(ctx, dest):
    with tarfile.open(dest, "w:gz") as tar:
        for p in sorted(ctx.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(ctx)), recursive=False)
    return dest


def recipe(name, steps, **kw):
    doc = {"name": name, "from_image": "tiny", "steps": steps, **kw}
    return parse_build_request(doc)


async def build(store, r, logs=None):
    return await store.build(r, (logs if logs is not None else []).append)


def find(image, rel):
    for layer in image.layers:
        if (layer / rel).exists() or (layer / rel).is_symlink():
            return layer / rel
    return None


async def test_copy_env_workdir_user(store, tiny, tmp_path):
    ctx = make_context(tmp_path, {"app.py": "print(1)\n", "src/pkg/mod.py": "x = 1\n"})
    r = recipe("app", [
        {"type": "ENV", "args": ["GREETING", "hi"]},
        {"type": "COPY", "args": ["app.py", "/app/"], "filesHash": "h1"},
        {"type": "COPY", "args": ["src", "/bin/src"], "filesHash": "h1", "owner": "user"},
        {"type": "USER", "args": ["user"]},
        {"type": "WORKDIR", "args": ["/home/user/work"]},  # made after USER: owned by user
    ], startCmd="python /app/app.py", readyCmd={"type": "file", "path": "/tmp/up"})
    r.contexts = {"h1": tarball(ctx, tmp_path / "ctx.tar.gz")}
    image = await build(store, r)
    assert store.get("app") == image
    assert image.env["GREETING"] == "hi" and image.env["A"] == "0"
    assert (image.workdir, image.user, image.start_cmd) == ("/home/user/work", "user", "python /app/app.py")
    assert image.ready_check.kind == "file"
    assert len(image.layers) == 4 and image.layers[-1] == tiny.layers[0]
    app = find(image, "app/app.py")
    assert app.read_text() == "print(1)\n" and os.stat(app).st_uid == 100000
    # /bin is a symlink in the base: the copy lands in /usr/bin, never shadowing the link with a directory.
    mod = find(image, "usr/bin/src/pkg/mod.py")
    assert mod is not None and os.stat(mod).st_uid == 101000
    assert all(not (layer / "bin").is_dir() or (layer / "bin").is_symlink() for layer in image.layers)
    work = find(image, "home/user/work")
    assert os.stat(work).st_uid == 101000
    # The parent dir in the new layer keeps the base's owner and mode.
    assert os.stat(work.parent).st_uid == 101000 and oct(os.stat(work.parent).st_mode & 0o777) == oct(0o750)


async def test_unchanged_steps_come_from_cache_changed_content_does_not(store, tiny, tmp_path):
    ctx = make_context(tmp_path, {"a.txt": "one"})
    steps = [{"type": "COPY", "args": ["a.txt", "/data/a.txt"]}, {"type": "WORKDIR", "args": ["/data/w"]}]
    first = recipe("c1", steps)
    first.context = ctx
    img1 = await build(store, first)
    logs = []
    again = recipe("c2", steps)
    again.context = ctx
    img2 = await build(store, again, logs)
    assert img2.layers == img1.layers
    assert sum("using cache" in line for line in logs) == 2
    (ctx / "a.txt").write_text("two")
    changed = recipe("c3", steps)
    changed.context = ctx
    img3 = await build(store, changed)
    assert img3.layers[1] != img1.layers[1] and img3.layers[0] != img1.layers[0]
    assert find(img3, "data/a.txt").read_text() == "two"
    assert find(img1, "data/a.txt").read_text() == "one"  # the old layer is untouched
    nocache = recipe("c4", steps, skipCache=True)
    nocache.context = ctx
    assert (await build(store, nocache)).layers[0] != img3.layers[0]


async def test_failing_step_registers_nothing(store, tiny, tmp_path):
    r = recipe("broken", [{"type": "COPY", "args": ["missing.txt", "/x"]}])
    r.context = make_context(tmp_path, {"other": "x"})
    with pytest.raises(Invalid):
        await build(store, r)
    assert not store.exists("broken")
    assert not any(store.tmp_dir.iterdir())
    with pytest.raises(BuildFailed):
        await build(store, recipe("baduser", [{"type": "USER", "args": ["ghost"]}]))
    assert not store.exists("baduser")


async def test_copy_refuses_escaping_archives(store, tiny, tmp_path):
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../../escape.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    r = recipe("evil", [{"type": "COPY", "args": ["*", "/x/"], "filesHash": "e"}])
    r.contexts = {"e": evil}
    with pytest.raises(Invalid):
        await build(store, r)
    assert not (tmp_path.parent / "escape.txt").exists()


async def test_unknown_base_and_builtin_name(store, tiny):
    with pytest.raises(NotFound):
        await build(store, parse_build_request({"name": "x", "from_image": "registry.example/nope:1", "steps": []}))
    with pytest.raises(Conflict):
        await build(store, parse_build_request({"name": "base", "from_image": "tiny", "steps": []}))


async def test_run_refuses_a_backend_without_isolation(store, tiny):
    r = recipe("hostrun", [{"type": "RUN", "args": ["touch /tmp/pwned-by-build"]}])
    with pytest.raises(BuildFailed, match="isolating backend"):
        await store.build(r, backend=FakeBackend(store.settings))
    assert not os.path.exists("/tmp/pwned-by-build") and not store.exists("hostrun")


async def test_copy_upper_keeps_whiteouts_and_opaque_dirs_and_drops_build_mounts(tmp_path):
    from sandboxd.templates.build import copy_upper
    upper = tmp_path / "upper"
    (upper / "etc/ssl/certs").mkdir(parents=True)
    (upper / "etc/ssl/certs/sandboxd-build-ca.crt").write_text("")  # the CA bind's mount target
    (upper / "opt/sandboxd/pkg/sandboxd").mkdir(parents=True)
    (upper / "opaque").mkdir()
    os.setxattr(upper / "opaque", "trusted.overlay.opaque", b"y")
    os.mknod(upper / "deleted", 0o600 | 0o020000, os.makedev(0, 0))
    (upper / "new.txt").write_text("n")
    os.link(upper / "new.txt", upper / "hard.txt")
    out = tmp_path / "layer"
    out.mkdir()
    await copy_upper(upper, out)
    assert not (out / "etc/ssl/certs/sandboxd-build-ca.crt").exists()
    assert not (out / "opt/sandboxd/pkg/sandboxd").exists()
    assert os.getxattr(out / "opaque", "trusted.overlay.opaque") == b"y"
    st = os.lstat(out / "deleted")
    assert (st.st_mode & 0o170000, st.st_rdev) == (0o020000, 0)
    assert os.stat(out / "new.txt").st_ino == os.stat(out / "hard.txt").st_ino


async def test_copy_upper_never_deletes_through_a_planted_symlink(tmp_path):
    """A RUN that turns /opt or /etc/ssl into a symlink to a host directory: dropping the build-only mount
    targets from the copied layer must not follow it and delete host files."""
    from sandboxd.templates.build import copy_upper
    host = tmp_path / "host"
    (host / "sandboxd/pkg/sandboxd").mkdir(parents=True)
    (host / "sandboxd/pkg/sandboxd/keep").write_text("host file")
    (host / "certs").mkdir()
    (host / "certs/sandboxd-build-ca.crt").write_text("host file")
    upper = tmp_path / "upper"
    (upper / "etc/ssl").mkdir(parents=True)
    (upper / "opt").symlink_to(str(host))
    (upper / "etc/ssl/certs").symlink_to(str(host / "certs"))
    out = tmp_path / "layer"
    out.mkdir()
    await copy_upper(upper, out)
    assert (host / "sandboxd/pkg/sandboxd/keep").read_text() == "host file"
    assert (host / "certs/sandboxd-build-ca.crt").read_text() == "host file"
    assert os.readlink(out / "opt") == str(host)  # the layer keeps the build's symlink as it made it
