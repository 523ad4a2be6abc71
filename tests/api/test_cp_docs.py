"""The control plane serves its checked-in OpenAPI documents and a reference page that needs no network."""
from __future__ import annotations

import gzip
import re
from pathlib import Path

import httpx
import pytest
import yaml

from support.server import CPServer

SPEC = Path(__file__).resolve().parents[2] / "spec"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = CPServer(tmp_path_factory.mktemp("docs")).start()
    yield srv
    srv.close()


@pytest.mark.parametrize("route,file", [("/openapi.json", "controlplane.yaml"), ("/openapi/e2b.json", "e2b.yaml"),
                                        ("/openapi/monitoring.json", "monitoring.yaml")])
def test_served_document_equals_the_checked_in_yaml_without_a_key(server, route, file):
    r = httpx.get(server.base + route)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == yaml.safe_load((SPEC / file).read_text())


def test_an_unknown_document_is_a_404_in_the_api_error_shape(server):
    r = httpx.get(server.base + "/openapi/nope.json")
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"
    assert "e2b" in r.json()["error"]["details"]["documents"]


def test_the_page_loads_every_asset_from_this_server_and_each_is_served(server):
    r = httpx.get(server.base + "/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", r.text)
    assert len(refs) >= 4
    for ref in refs:
        assert ref.startswith("/") and not ref.startswith("//"), ref  # same origin: no CDN, no other host
        plain = httpx.get(server.base + ref, headers={"accept-encoding": "identity"})
        assert plain.status_code == 200, ref
        assert "content-encoding" not in plain.headers
        with httpx.stream("GET", server.base + ref, headers={"accept-encoding": "gzip"}) as packed:
            assert packed.headers["content-encoding"] == "gzip"
            assert gzip.decompress(b"".join(packed.iter_raw())) == plain.content
    for doc in re.findall(r'value="(/openapi[^"]*)"', r.text):
        assert httpx.get(server.base + doc).status_code == 200, doc


def test_the_viewer_scripts_name_no_other_host(server):
    js = httpx.get(server.base + "/docs/assets/docs.js").text
    assert not re.search(r"https?://", js)
    css = httpx.get(server.base + "/docs/assets/swagger-ui.css").text
    assert "@import" not in css and not re.search(r"url\(\s*['\"]?(https?:)?//", css)


def test_an_unknown_asset_is_a_404(server):
    assert httpx.get(server.base + "/docs/assets/../../config.py").status_code == 404
    assert httpx.get(server.base + "/docs/assets/LICENSE").status_code == 404
