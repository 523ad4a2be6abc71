"""What a build's FROM may read from the host: only OCI images in the operator's import directory.

Through the API of a real server (fake backend: the check happens when the build is requested). Without
an import directory no host path is accepted at all; with one, paths resolve inside it (`/`, `..` and
symlinks included), and every refusal reads the same whether the path exists outside or not, naming no
host directory.
"""
from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest


from support.server import CPServer


def oci_archive(path: Path) -> Path:
    """A tar holding an OCI layout's index.json (enough for the request-time check and the index read)."""
    src = path.parent / (path.name + ".d")
    src.mkdir()
    (src / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "0" * 64, "size": 1}]}))
    (src / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    with tarfile.open(path, "w") as tar:
        for p in sorted(src.iterdir()):
            tar.add(p, arcname=p.name)
    return path


@pytest.fixture(scope="module")
def world():
    """outside/ (a valid archive the server must not reach), imports/ (the import directory)."""
    base = Path(tempfile.mkdtemp(prefix="sec-bip-"))
    (base / "outside").mkdir()
    (base / "imports").mkdir()
    oci_archive(base / "outside" / "secret.tar")
    oci_archive(base / "imports" / "ok.tar")
    (base / "imports" / "escape.tar").symlink_to(base / "outside" / "secret.tar")
    (base / "imports" / "hostroot").symlink_to("/")
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _server(world: Path, name: str, **env: str) -> CPServer:
    data = world / name
    data.mkdir()
    return CPServer(data, None, **env).start()


@pytest.fixture(scope="module")
def closed(world):
    srv = _server(world, "data-closed")
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def importing(world):
    srv = _server(world, "data-importing", SANDBOXD_IMPORT_DIR=str(world / "imports"))
    yield srv
    srv.close()


def request(srv: CPServer, from_image: str):
    with srv.client() as c:
        before = len(c.get("/v1/templates").json()["data"])
        r = c.post("/v1/templates/build", json={"name": "sec-bip", "from_image": from_image,
                                                "steps": [{"type": "ENV", "args": ["A", "1"]}]})
        if r.status_code >= 400:
            assert len(c.get("/v1/templates").json()["data"]) == before  # a refusal creates nothing
        else:
            c.delete("/v1/templates/sec-bip")
    return r


def no_host_path(r, world: Path, srv: CPServer) -> None:
    for path in (str(world), str(srv.data_dir), "/etc", "/var/lib", "/tmp"):
        assert path not in r.text, r.text


@pytest.mark.parametrize("ref", ["oci-archive:/etc/passwd", "/etc/passwd", "oci:/etc",
                                 "oci-archive:/proc/self/environ"])
def test_without_an_import_dir_no_host_path_is_read(closed, world, ref):
    r = request(closed, ref)
    assert r.status_code == 400 and r.json()["code"] == "image_import_disabled", r.text
    no_host_path(r, world, closed)


def test_paths_outside_the_import_dir_look_like_missing_ones(importing, world):
    missing = request(importing, "oci-archive:/no-such.tar")
    assert missing.status_code == 404 and missing.json()["code"] == "image_not_found", missing.text
    no_host_path(missing, world, importing)
    outside = str(world / "outside" / "secret.tar")
    for ref in (f"oci-archive:{outside}", "oci-archive:../outside/secret.tar", "oci-archive:escape.tar",
                "oci-archive:hostroot/etc/passwd", "/etc/passwd", "oci:/etc", f"{outside}:latest"):
        r = request(importing, ref)
        assert (r.status_code, r.json()["code"], r.json()["message"]) == (
            404, "image_not_found", missing.json()["message"]), (ref, r.text)
        no_host_path(r, world, importing)


def test_an_archive_in_the_import_dir_is_accepted(importing):
    for ref in ("oci-archive:ok.tar", "oci-archive:/ok.tar", "/ok.tar"):
        r = request(importing, ref)
        assert r.status_code == 202, (ref, r.text)


def test_build_logs_and_errors_mask_the_servers_directories(tmp_path):
    """What the tools under a build print (cp, umoci, the runtime) reaches the caller without host paths."""
    from sandboxd.config import Settings
    from sandboxd.core.builds import host_masks, mask

    settings = Settings(data_dir=tmp_path / "data", import_dir=tmp_path / "imports")
    line = (f"cp: cannot stat '{settings.templates_dir}/layers/x/rootfs': No such file; "
            f"umoci: {tmp_path}/imports/a.tar; mount {settings.data_dir}/sandboxes/s/disk")
    masked = mask(line, host_masks(settings))
    assert str(tmp_path) not in masked
    assert "<templates>/layers/x/rootfs" in masked and "<import-dir>/a.tar" in masked


def _upload(srv: CPServer, files_hash: str, body: bytes) -> None:
    import httpx

    with srv.client() as c:
        link = c.post("/v1/templates/files/upload-link", json={"files_hash": files_hash,
                                                                "content_length": len(body)}).json()
    assert httpx.put(link["upload_url"], content=body).status_code == 200


def test_an_uploaded_archive_needs_no_host_path(closed, world):
    """Without an import directory, a caller still imports an OCI archive it uploaded itself."""
    _upload(closed, "secbip-oci-0001", (world / "imports" / "ok.tar").read_bytes())
    assert request(closed, "oci-archive:upload:secbip-oci-0001").status_code == 202
    assert request(closed, "oci-archive:upload:secbip-oci-0001:v1").status_code == 202
    r = request(closed, "oci-archive:upload:never-uploaded-1")
    assert r.status_code == 404 and r.json()["code"] == "files_not_uploaded"
    for ref in ("oci-archive:upload:../../etc/passwd", "oci-archive:upload:/etc/passwd"):
        r = request(closed, ref)
        assert r.status_code == 400 and r.json()["code"] == "invalid_image", r.text
        no_host_path(r, world, closed)
