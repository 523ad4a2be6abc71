"""FROM an OCI archive: umoci unpack, uid shift, the image's env/user/workdir, and the agent kit on top."""
import os
import shutil
import stat
import subprocess
import tarfile

import pytest

from sandboxd.errors import Invalid, NotFound
from sandboxd.templates.steps import parse_build_request

pytestmark = [pytest.mark.real, pytest.mark.skipif(not shutil.which("umoci"), reason="umoci not installed")]


def make_archive(tmp_path):
    """A tiny OCI image made with umoci: /etc/passwd, a file owned by uid 1000, Env, WorkingDir, User."""
    layout = tmp_path / "layout"
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:v1"], check=True)
    content = tmp_path / "content"
    (content / "etc").mkdir(parents=True)
    (content / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/srv:/bin/sh\n")
    (content / "srv").mkdir()
    (content / "srv/data.txt").write_text("hello")
    os.chown(content / "srv/data.txt", 1000, 1000)
    subprocess.run(["umoci", "insert", "--image", f"{layout}:v1", str(content), "/"], check=True)
    subprocess.run(["umoci", "config", "--image", f"{layout}:v1", "--config.env", "APP_MODE=prod",
                    "--config.workingdir", "/srv", "--config.user", "1000"], check=True)
    archive = tmp_path / "image.tar"
    with tarfile.open(archive, "w") as tar:
        for p in sorted(layout.iterdir()):
            tar.add(p, arcname=p.name)
    return archive


async def test_oci_archive_as_from_base(scratch_store, tmp_path):
    archive = make_archive(tmp_path)
    scratch_store.settings.import_dir = tmp_path  # FROM paths are inside the operator's import directory
    logs = []
    r = parse_build_request({"name": "from-oci", "from_image": f"oci-archive:{archive.name}:v1",
                             "steps": [{"type": "ENV", "args": ["EXTRA", "1"]}]})
    image = await scratch_store.build(r, logs.append)
    assert image.env["APP_MODE"] == "prod" and image.env["EXTRA"] == "1"
    assert image.workdir == "/srv" and image.user == "1000"
    kit, unpacked = image.layers
    base = scratch_store.settings.uid_base
    data = unpacked / "srv/data.txt"
    assert data.read_text() == "hello" and os.stat(data).st_uid == base + 1000
    assert os.stat(unpacked / "etc/passwd").st_uid == base
    assert (kit / "opt/sandboxd/rt").is_dir() and (kit / "usr/bin/tini").is_file()
    # This tiny image has no Python: the agent gets its own runtime (test_agent_runtime.py).
    assert image.agent_runtime is not None and any("agent runs on its own runtime" in line for line in logs)
    # A second build reuses the unpacked layer instead of unpacking again.
    logs.clear()
    again = await scratch_store.build(parse_build_request(
        {"name": "from-oci-2", "from_image": f"/{archive.name}:v1", "steps": []}), logs.append)
    assert again.layers == image.layers and not any("umoci" in line for line in logs)


async def test_oci_layout_dir_as_from_base(scratch_store, tmp_path):
    make_archive(tmp_path)
    scratch_store.settings.import_dir = tmp_path
    logs = []
    image = await scratch_store.build(parse_build_request(
        {"name": "from-layout", "from_image": "oci:layout:v1", "steps": []}), logs.append)
    assert image.workdir == "/srv" and (image.layers[1] / "srv/data.txt").read_text() == "hello"
    for line in logs:  # umoci ran on a descriptor: the log names no host directory
        assert str(tmp_path) not in line and str(scratch_store.root) not in line, line


async def test_missing_archive_and_tag(scratch_store, tmp_path):
    imports = tmp_path / "imports"
    imports.mkdir()
    scratch_store.settings.import_dir = imports
    archive = make_archive(tmp_path)  # outside the import directory
    errors = []
    for ref in ("oci-archive:none.tar", f"oci-archive:{archive}", f"oci-archive:../{archive.name}"):
        with pytest.raises(NotFound) as got:
            await scratch_store.build(parse_build_request({"name": "x", "from_image": ref, "steps": []}))
        errors.append(got.value.message)
    assert len(set(errors)) == 1 and str(tmp_path) not in errors[0]  # outside reads as missing
    os.rename(archive, imports / archive.name)
    with pytest.raises(NotFound):
        await scratch_store.build(parse_build_request(
            {"name": "x", "from_image": f"oci-archive:{archive.name}:nope", "steps": []}))
    (imports / "junk.tar").write_bytes(b"not a tar")
    with pytest.raises(Invalid) as got:
        await scratch_store.build(parse_build_request({"name": "x", "from_image": "/junk.tar", "steps": []}))
    assert str(imports) not in got.value.message
    assert not scratch_store.exists("x")


async def test_no_import_dir_no_host_paths(scratch_store, tmp_path):
    archive = make_archive(tmp_path)
    assert scratch_store.settings.import_dir is None
    with pytest.raises(Invalid) as got:
        await scratch_store.build(parse_build_request(
            {"name": "x", "from_image": f"oci-archive:{archive}:v1", "steps": []}))
    assert got.value.code == "image_import_disabled" and str(tmp_path) not in got.value.message


async def test_device_nodes_of_an_image_never_reach_the_layer_store(scratch_store, tmp_path):
    """An image may carry device nodes (umoci, as root, creates them); the layer store is readable by host
    users, so an imported layer keeps none (a sandbox gets its /dev from the runtime)."""
    layout = tmp_path / "layout"
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:v1"], check=True)
    content = tmp_path / "content"
    (content / "dev").mkdir(parents=True)
    os.mknod(content / "dev" / "rawdisk", 0o666 | stat.S_IFBLK, os.makedev(7, 0))
    os.mknod(content / "dev" / "mem", 0o666 | stat.S_IFCHR, os.makedev(1, 1))
    subprocess.run(["umoci", "insert", "--image", f"{layout}:v1", str(content), "/"], check=True)
    scratch_store.settings.import_dir = tmp_path
    logs = []
    image = await scratch_store.build(parse_build_request(
        {"name": "from-devs", "from_image": "oci:layout:v1", "steps": []}), logs.append)
    unpacked = image.layers[1]
    assert (unpacked / "dev").is_dir() and not os.listdir(unpacked / "dev")
    assert any("removed 2 device node" in line for line in logs)


async def test_uploaded_archive_as_from_base(scratch_store, tmp_path):
    archive = make_archive(tmp_path)
    uploads = scratch_store.settings.data_dir / "uploads"
    uploads.mkdir(parents=True)
    shutil.copy(archive, uploads / "ociupload01.tar.gz")  # what an upload link stores
    image = await scratch_store.build(parse_build_request(
        {"name": "from-upload", "from_image": "oci-archive:upload:ociupload01:v1", "steps": []}))
    assert image.workdir == "/srv" and (image.layers[1] / "srv/data.txt").read_text() == "hello"
