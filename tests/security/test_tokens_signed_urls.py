"""Signed file URLs (E2B `download_url` / `upload_url`) through a real server and the official SDK: a URL
authorises exactly its one operation on its one path as its one user, whatever else the holder adds."""
from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest


from support.server import CPServer


@pytest.fixture(scope="module")
def sbx(tmp_path_factory):
    srv = CPServer(tmp_path_factory.mktemp("cp")).start()
    mp = pytest.MonkeyPatch()
    try:
        for name, value in {"E2B_API_URL": srv.base, "E2B_SANDBOX_URL": srv.gateway, "E2B_API_KEY": srv.key}.items():
            mp.setenv(name, value)
        mp.delenv("E2B_DOMAIN", raising=False)
        from e2b import Sandbox

        box = Sandbox.create(timeout=300, secure=True)
        try:
            box.files.write("signed-a b", "space")
            box.files.write("signed-a+b", "plus")
            yield box
        finally:
            box.kill()
    finally:
        mp.undo()
        srv.close()


def with_query(url: str, extra: list[tuple[str, str]] | None = None, replace: dict | None = None) -> str:
    parts = urlsplit(url)
    query = [(k, (replace or {}).get(k, v)) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return parts._replace(query=urlencode(query + (extra or []))).geturl()


def test_a_read_url_reads_its_path_only(sbx):
    url = sbx.download_url("signed-a b")
    ok = httpx.get(url)
    assert ok.status_code == 200 and ok.text == "space"
    plus = url.replace("signed-a%20b", "signed-a+b")  # the same URL as urlencode spells it
    assert httpx.get(plus).text == "space"
    # `%20` anywhere made the agent decode the path differently (`+` stayed a plus): another file was read.
    assert httpx.get(plus + "&x=%20").status_code == 403
    assert httpx.get(with_query(url, [("path", "signed-a+b")])).status_code == 403  # a second path
    assert httpx.get(with_query(url, replace={"path": "signed-a+b"})).status_code == 401  # another path
    assert httpx.get(with_query(url, [("username", "root")])).status_code == 401  # another user
    basic_root = {"Authorization": "Basic cm9vdDo="}  # root: the agent takes the user from Basic auth first
    assert httpx.get(url, headers=basic_root).status_code == 403
    assert httpx.post(url, files={"file": ("x", b"overwritten")}).status_code == 401  # another operation
    assert httpx.head(url).status_code == 401
    assert httpx.get(url.replace("/files?", "/filesystem?", 1)).status_code == 401
    assert sbx.files.read("signed-a b") == "space" and sbx.files.read("signed-a+b") == "plus"


def test_an_upload_url_writes_its_path_only(sbx):
    url = sbx.upload_url("signed-upload")
    assert httpx.post(url, files={"file": ("ignored-name", b"one")}).status_code == 200
    assert sbx.files.read("signed-upload") == "one"
    assert httpx.get(url).status_code == 401  # a write URL reads nothing
    two = [("file", ("signed-elsewhere-1", b"x")), ("file", ("signed-elsewhere-2", b"y"))]
    assert httpx.post(url, files=two).status_code == 400  # the parts' own names would be other paths
    assert not sbx.files.exists("signed-elsewhere-1") and not sbx.files.exists("signed-elsewhere-2")
    assert sbx.files.read("signed-upload") == "one"
