"""The web dashboard (docs/dashboard.md): one static page and its assets, shipped in the package.

The page holds no secret: the browser tab keeps the API key and calls the same API every client calls, so
these routes need no key. The Content-Security-Policy lets the page load scripts from this server only and
talk to nothing but the API and the sandbox gateway (the files browser and the terminal).
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from sandboxd.api import packed
from sandboxd.api.deps import services
from sandboxd.errors import NotFound

ROOT = Path(__file__).parent / "static" / "dashboard"
TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml"}

router = APIRouter(include_in_schema=False)


def gateway_origins(public_host: str) -> str:
    """The gateway's origins for a CSP `connect-src`: its HTTP one (the files browser) and its WebSocket one
    (the terminal), which a CSP names separately."""
    url = urlsplit(public_host)
    if not url.scheme or not url.netloc:
        return ""
    return f"{url.scheme}://{url.netloc} {'wss' if url.scheme == 'https' else 'ws'}://{url.netloc}"


def headers(request: Request) -> dict[str, str]:
    gateway = gateway_origins(services(request).public_host)
    # xterm.js writes its measured cell sizes into a <style> element, hence 'unsafe-inline' for styles only.
    csp = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
           f"font-src 'self'; connect-src 'self' {gateway}".rstrip() + "; base-uri 'none'; form-action 'none'; "
           "frame-ancestors 'none'")
    return {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}


@functools.cache
def load(path: Path) -> tuple[bytes, bytes, str]:
    """(raw, gzipped, ETag): read once; the files change only with the package."""
    raw = path.read_bytes()
    return *packed.pack(raw), '"' + hashlib.sha256(raw).hexdigest()[:32] + '"'


def send(request: Request, path: Path) -> Response:
    raw, gz, etag = load(path)
    extra = {**headers(request), "etag": etag}
    if request.headers.get("if-none-match") == etag:  # no-cache: a reload asks again, and is told it has it
        return Response(status_code=304, headers=extra)
    return packed.answer(request, raw, gz, TYPES[path.suffix], extra)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/dashboard/", status_code=307)


@router.get("/dashboard")
@router.get("/dashboard/")
async def page(request: Request) -> Response:
    return send(request, ROOT / "index.html")


@router.get("/dashboard/assets/{name:path}")
async def asset(name: str, request: Request) -> Response:
    path = (ROOT / name).resolve()
    if not path.is_relative_to(ROOT.resolve()) or not path.is_file() or path.suffix not in TYPES:
        raise NotFound(f"no dashboard asset {name}", code="not_found")
    return send(request, path)
