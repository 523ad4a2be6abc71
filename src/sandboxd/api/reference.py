"""The API's reference as the server ships it: the checked-in OpenAPI documents and a vendored Swagger UI.

Both are package data (`api/spec` is the repository's `spec/` folder, copied into the wheel; `api/static` holds
the viewer), so `GET /docs` needs no network and no checkout at run time (docs/api.md). Documents are parsed
and assets compressed once, on first use.
"""
from __future__ import annotations

import functools
import json
from importlib.resources import files

import yaml

from sandboxd.api.packed import pack
from sandboxd.errors import NotFound

# served name -> checked-in file; /openapi.json is the control plane's own (HopX dialect and ours)
SPECS = {"controlplane": "controlplane.yaml", "e2b": "e2b.yaml", "monitoring": "monitoring.yaml"}
ASSETS = {
    "swagger-ui-bundle.js": ("swagger-ui/swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "swagger-ui.css": ("swagger-ui/swagger-ui.css", "text/css; charset=utf-8"),
    "docs.js": ("docs.js", "text/javascript; charset=utf-8"),
    "docs.css": ("docs.css", "text/css; charset=utf-8"),
}


@functools.cache
def spec_json(name: str) -> bytes:
    if name not in SPECS:
        raise NotFound(f"no OpenAPI document {name!r}", details={"documents": sorted(SPECS)})
    doc = yaml.safe_load(files("sandboxd.api").joinpath("spec", SPECS[name]).read_text(encoding="utf-8"))
    return json.dumps(doc, ensure_ascii=False).encode()


@functools.cache
def page() -> bytes:
    return files("sandboxd.api").joinpath("static", "docs.html").read_bytes()


@functools.cache
def asset(name: str) -> tuple[bytes, bytes, str]:
    """(raw, gzipped, media type) of a viewer asset."""
    if name not in ASSETS:
        raise NotFound(f"no documentation asset {name!r}")
    path, media = ASSETS[name]
    raw = files("sandboxd.api").joinpath("static", *path.split("/")).read_bytes()
    return *pack(raw), media
