"""FROM an image in a registry the operator named: a real registry (Debian's docker-registry) on a loopback
port this test starts, the image pushed with skopeo; short names resolve in the default registry only; a
registry nobody named is never contacted."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time

import httpx
import pytest

from sandboxd.errors import NotFound
from sandboxd.templates import registry
from sandboxd.templates.steps import parse_build_request
from test_oci_import import make_archive

pytestmark = [pytest.mark.real,
              pytest.mark.skipif(not (shutil.which("skopeo") and shutil.which("docker-registry")),
                                 reason="skopeo and docker-registry are installed by scripts/test.sh")]


@pytest.fixture(scope="module")
def local_registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (root / "config.yml").write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\nlog:\n  level: error\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")],
                            stdout=open(root / "log", "wb"), stderr=subprocess.STDOUT)
    host = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"http://{host}/v2/", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, (root / "log").read_text()
        time.sleep(0.1)
    yield host, root
    proc.terminate()
    proc.wait(10)


def push(tmp_path, host: str, name: str) -> None:
    archive = make_archive(tmp_path)
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci-archive:{archive}:v1",
                    f"docker://{host}/{name}"], check=True)


def requests_seen(root) -> str:
    return (root / "log").read_text()


async def test_from_an_image_in_the_operators_registry(scratch_store, tmp_path, local_registry):
    host, _ = local_registry
    push(tmp_path, host, "team/tiny:v1")
    s = scratch_store.settings
    s.registries, s.insecure_registries = host, host
    logs = []
    image = await scratch_store.build(parse_build_request(
        {"name": "from-registry", "from_image": f"{host}/team/tiny:v1",
         "steps": [{"type": "ENV", "args": ["EXTRA", "1"]}]}), logs.append)
    assert image.env["APP_MODE"] == "prod" and image.env["EXTRA"] == "1" and image.workdir == "/srv"
    assert (image.layers[1] / "srv/data.txt").read_text() == "hello"
    assert any("pulling with skopeo" in line for line in logs)
    assert not any(str(scratch_store.root) in line for line in logs)  # the log names no host path

    # A short name means the operator's default registry (Docker Hub's library/ convention), nothing else.
    push(tmp_path / "again", host, "library/tiny:v2")
    s.default_registry = host
    short = await scratch_store.build(parse_build_request(
        {"name": "from-short-name", "from_image": "tiny:v2", "steps": []}), logs.append)
    assert (short.layers[1] / "srv/data.txt").read_text() == "hello" and short.env["APP_MODE"] == "prod"
    # Pulled again, the same image reuses its unpacked layer.
    again = await scratch_store.build(parse_build_request(
        {"name": "from-short-name-2", "from_image": "tiny:v2", "steps": []}), logs.append)
    assert again.layers[1:] == short.layers[1:]


async def test_registries_nobody_named_are_never_contacted(scratch_store, local_registry):
    host, root = local_registry
    s = scratch_store.settings
    s.registries = s.default_registry = ""
    before = requests_seen(root)
    with pytest.raises(NotFound):
        await scratch_store.build(parse_build_request(
            {"name": "from-unnamed", "from_image": f"{host}/team/tiny:v1", "steps": []}), lambda _l: None)
    assert registry.source(s, f"{host}/team/tiny:v1") is None and registry.source(s, "tiny:v2") is None
    s.registries, s.default_registry = "registry.invalid", ""
    assert registry.source(s, "tiny:v2") is None  # a short name without a default registry is no pull
    assert requests_seen(root) == before


def test_references():
    class S:
        registries, default_registry, insecure_registries, registry_auth_file = "reg.local:5000,mirror.example", \
            "mirror.example", "", None

    assert registry.source(S, "reg.local:5000/a/b:1") == "docker://reg.local:5000/a/b:1"
    assert registry.source(S, "ubuntu:22.04") == "docker://mirror.example/library/ubuntu:22.04"
    assert registry.source(S, "org/app") == "docker://mirror.example/org/app"
    assert registry.source(S, "other.example/x:1") is None
    assert registry.source(S, "reg.local:5000/../etc") is None and registry.source(S, "-rm") is None
    assert registry.tag_of("docker://h/a/b:1.2") == "1.2" and registry.tag_of("docker://h:5/a") == "latest"


def test_image_aliases_are_the_operators_and_name_a_repository():
    from pydantic import ValidationError

    from sandboxd.config import Settings

    s = Settings(image_aliases=" ubuntu=base, docker.io/library/python=base ,node=code-interpreter,")
    assert registry.alias(s, "ubuntu:22.04") == "base" and registry.alias(s, "ubuntu") == "base"
    assert registry.alias(s, "python:3.12-slim") == "base" and registry.alias(s, "library/python@sha256:ab") == "base"
    assert registry.alias(s, "node:20") == "code-interpreter"
    assert registry.alias(s, "debian:12") is None and registry.alias(s, "evil.example/ubuntu:22.04") is None
    assert registry.alias(Settings(), "ubuntu:22.04") is None  # none unless the operator says so
    for bad in ("ubuntu", "ubuntu:22.04=base", "=base", "ubuntu="):
        with pytest.raises(ValidationError, match="image_aliases"):
            Settings(image_aliases=bad)
