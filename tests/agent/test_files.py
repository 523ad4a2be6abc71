"""The /files API: read, download, write (text/base64/mode/parents), upload, list, exists, remove, mkdir."""
from __future__ import annotations

import base64
import os
import stat

import pytest

from .conftest import assert_error


def test_write_and_read_text_with_parents_and_mode(client, workspace):
    path = workspace / "deep" / "er" / "hello.txt"
    r = client.post("/files/write", json={"path": str(path), "content": "héllo\n", "mode": "0600"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert path.read_text() == "héllo\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    r = client.get(f"/files/read?path={path}")
    assert r.json()["content"] == "héllo\n"


def test_relative_paths_are_under_workspace(client, workspace):
    client.post("/files/write", json={"path": "rel.txt", "content": "r"})
    assert (workspace / "rel.txt").read_text() == "r"


def test_base64_write_is_stored_decoded_and_download_is_raw(client, workspace):
    blob = bytes(range(256)) * 10
    path = workspace / "bin.dat"
    client.post("/files/write", json={"path": str(path), "content": base64.b64encode(blob).decode(),
                                      "encoding": "base64"})
    assert path.read_bytes() == blob
    r = client.get("/files/download", params={"path": str(path)})
    assert r.status_code == 200 and r.content == blob
    assert r.headers["content-length"] == str(len(blob))


def test_unencoded_query_path_with_space(client, workspace):
    path = workspace / "with space+plus.txt"
    path.write_text("x")
    # the HopX client sends ?path= without URL-encoding ('+' must stay a plus)
    r = client.get(f"/files/read?path={path}")
    assert r.status_code == 200 and r.json()["content"] == "x"
    r = client.get("/files/read", params={"path": str(path)})  # and form-encoded ('+' for space, %2B)
    assert r.status_code == 200 and r.json()["content"] == "x"


def test_read_missing_is_file_not_found(client, workspace):
    body = assert_error(client.get("/files/read", params={"path": str(workspace / "nope")}), 404, "FILE_NOT_FOUND")
    assert body["details"]["path"] == str(workspace / "nope") and body["path"] == body["details"]["path"]
    assert_error(client.get("/files/download", params={"path": str(workspace / "nope")}), 404, "FILE_NOT_FOUND")


def test_upload_multipart_path_before_and_after_file(client, workspace):
    dest = workspace / "up" / "a.bin"
    r = client.post("/files/upload", data={"path": str(dest)}, files={"file": ("a.bin", b"\x00payload\xff")})
    assert r.status_code == 200, r.text
    assert dest.read_bytes() == b"\x00payload\xff" and r.json()["size"] == 9
    # file part first, path field after it
    boundary = "XyZ"
    dest2 = workspace / "up" / "b.bin"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.bin\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + b"second" + \
           (f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\n{dest2}\r\n"
            f"--{boundary}--\r\n").encode()
    r = client.post("/files/upload", content=body, params={"mode": "0640"},
                    headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200, r.text
    assert dest2.read_bytes() == b"second" and stat.S_IMODE(dest2.stat().st_mode) == 0o640


def test_list_fields_both_spellings(client, workspace):
    d = workspace / "listme"
    (d / "sub").mkdir(parents=True, exist_ok=True)
    (d / "f.txt").write_text("12345")
    r = client.get("/files/list", params={"path": str(d)}).json()
    by = {f["name"]: f for f in r["files"]}
    assert set(by) == {"sub", "f.txt"}
    f = by["f.txt"]
    assert f["size"] == 5 and f["is_directory"] is False and f["is_dir"] is False
    assert f["path"] == str(d / "f.txt") and isinstance(f["permissions"], str)
    assert f["modified_time"].endswith("Z") and f["modified"] == f["modified_time"]
    assert by["sub"]["is_directory"] is True and by["sub"]["is_dir"] is True
    assert_error(client.get("/files/list", params={"path": str(d / "missing")}), 404, "DIRECTORY_NOT_FOUND")


def test_exists(client, workspace):
    (workspace / "e.txt").write_text("e")
    assert client.get("/files/exists", params={"path": str(workspace / "e.txt")}).json()["exists"] is True
    r = client.get("/files/exists", params={"path": str(workspace / "nope")})
    assert r.status_code == 200 and r.json()["exists"] is False


def test_mkdir_p_and_remove_recursive(client, workspace):
    d = workspace / "m1" / "m2" / "m3"
    assert client.post("/files/mkdir", json={"path": str(d)}).status_code == 200
    assert d.is_dir()
    assert client.post("/files/mkdir", json={"path": str(d)}).status_code == 200  # -p: idempotent
    (d / "x").write_text("x")
    r = client.delete("/files/remove", params={"path": str(workspace / "m1")})
    assert r.status_code == 200 and not (workspace / "m1").exists()
    assert_error(client.delete("/files/remove", params={"path": str(workspace / "m1")}), 404, "FILE_NOT_FOUND")


def test_paths_not_allowed(client):
    assert_error(client.post("/files/write", json={"path": "/proc/sys/kernel/x", "content": "1"}), 403,
                 "PATH_NOT_ALLOWED")
    assert_error(client.delete("/files/remove", params={"path": "/"}), 403, "PATH_NOT_ALLOWED")
    assert_error(client.get("/files/read"), 400, "MISSING_PARAMETER")


@pytest.mark.slow
def test_streaming_upload_and_download_do_not_buffer(client, workspace, agent):
    """1 GiB through the agent each way: its peak RSS must not grow by anything near the file size."""
    import httpx

    pid = next(p["pid"] for p in client.get("/processes").json()["processes"]
               if "sandboxd.agent" in p["command"] and str(workspace) in p["command"])

    def rss() -> int:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

    size = 2**30
    chunk = os.urandom(2**20)

    def gen():
        for _ in range(size // len(chunk)):
            yield chunk

    before = rss()
    dest = workspace / "big.bin"
    r = client.post("/files/upload", params={"path": str(dest)}, content=gen(),
                    headers={"content-type": "application/octet-stream"})
    assert r.status_code == 200 and dest.stat().st_size == size
    got = 0
    with httpx.stream("GET", f"{agent[0]}/files/download", params={"path": str(dest)}, timeout=60) as resp:
        for part in resp.iter_bytes():
            got += len(part)
    assert got == size
    dest.unlink()
    assert rss() - before < 64 * 2**20  # peak RSS grew far less than the 1 GiB that moved
