"""The web dashboard on the fake backend: its page and assets, its headers, and a real browser through its
pages (docs/dashboard.md). The real-sandbox walk (charts, terminal, kill) is tests/api/test_dashboard_real.py."""
from __future__ import annotations

import gzip
import re
from pathlib import Path

import httpx
import pytest

from support.browser import chromium, login, watched_page
from support.receiver import Receiver
from support.server import running_server
from support.waiting import wait_for

STATIC = Path(__file__).resolve().parents[2] / "src" / "sandboxd" / "api" / "static" / "dashboard"


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    yield from running_server(tmp_path_factory, SANDBOXD_WEBHOOK_ALLOW_PRIVATE="true")  # the receiver is local


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def test_root_redirects_to_the_dashboard_and_the_page_is_locked_down(cp):
    r = httpx.get(cp.base + "/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/dashboard/"
    page = httpx.get(cp.base + "/dashboard/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    assert csp["script-src"] == "'self'" and csp["default-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
    gateway = cp.gateway.removeprefix("http://")
    assert csp["connect-src"].split() == ["'self'", f"http://{gateway}", f"ws://{gateway}"]
    assert page.headers["x-content-type-options"] == "nosniff"


def test_the_page_names_only_assets_it_ships(cp):
    html = (STATIC / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="(?!data:)([^"#]+)"', html)
    assert refs and all(ref.startswith("/dashboard/assets/") for ref in refs)
    for ref in refs:
        r = httpx.get(cp.base + ref)
        assert r.status_code == 200 and r.content == (STATIC / ref.removeprefix("/dashboard/assets/")).read_bytes()
        assert "content-security-policy" in r.headers


@pytest.mark.parametrize("name", ["../dashboard.py", "..%2f..%2fapp.py", "vendor/xterm.LICENSE", "nope.js"])
def test_only_shipped_assets_are_served(cp, name):
    r = httpx.get(f"{cp.base}/dashboard/assets/{name}")
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_a_wrong_key_is_refused_and_a_member_sees_no_pools(cp, browser):
    with cp.client() as c:
        c.post("/v1/teams", json={"name": "dash-team"}).raise_for_status()
        member = c.post("/v1/api-keys", json={"name": "dash-member", "team": "dash-team"}).json()["key"]
    problems: list[str] = []
    page = watched_page(browser, problems)
    page.goto(cp.base + "/")
    page.fill("#api-key", "not-a-key")
    page.click("#login button[type=submit]")
    page.wait_for_selector("text=That key was refused.")
    assert page.evaluate("sessionStorage.length") == 0
    page.fill("#api-key", member)
    page.click("#login button[type=submit]")
    page.wait_for_selector("#sandbox-list")
    assert page.is_hidden("#nav-pools") and "team dash-team" in page.inner_text("#who")
    assert page.evaluate("sessionStorage.getItem('sandboxd.apiKey')") == member
    page.close()
    # The refused login logs its 401 and the member's probe of the operator's /v1/pools its 403; nothing else.
    assert len(problems) == 2 and "401" in problems[0] and "403" in problems[1], problems


def test_operator_pages_render_in_a_browser(cp, browser, tmp_path):
    problems: list[str] = []
    page = watched_page(browser, problems)
    login(page, cp.base, cp.key)
    assert page.is_visible("#nav-pools")
    page.wait_for_selector("#create-template option[value=base]", state="attached")
    with cp.client() as c:
        assert c.put("/v1/pools/base", json={"size": 1}).status_code == 200
        sid = c.post("/v1/sandboxes", json={"template_name": "desktop"}).json()["id"]
        c.delete(f"/v1/sandboxes/{sid}")
    for name, ready in [("templates", "#template-list table"), ("webhooks", "text=No webhooks."),
                        ("pools", "tr:has(td:text-is('base')) >> td:text-is('1')"),
                        ("usage", "tr:has(td:text-is('default')) >> td:text-is('1')")]:
        page.click(f"#nav a[href='#/{name}']")
        page.wait_for_selector(ready)
        shot = tmp_path / f"dashboard-{name}.png"
        page.screenshot(path=str(shot))
        print("screenshot:", shot)
    page.click("#nav a[href='#/templates']")
    page.wait_for_selector("#template-list table")
    with cp.client() as c:  # built while the page is open: the template stream brings its row
        r = c.post("/v1/templates/build", json={"name": "dash-built", "from_image": "base",
                                                "steps": [{"type": "RUN", "args": ["echo dash-step"]}]})
        assert r.status_code == 202, r.text
    page.click("button[data-template=dash-built]")
    page.wait_for_selector("#build-logs h2:has-text('dash-built')")
    page.wait_for_selector("#build-logs pre:has-text('build failed')")  # the fake backend runs no RUN step
    page.screenshot(path=str(tmp_path / "dashboard-build-log.png"))
    print("screenshot:", tmp_path / "dashboard-build-log.png")
    page.close()
    assert not problems, problems


def test_the_sandbox_list_follows_the_lifecycle_stream(cp, browser, tmp_path):
    problems: list[str] = []
    page = watched_page(browser, problems)
    login(page, cp.base, cp.key)
    page.wait_for_selector("#sandbox-list")
    with cp.client() as c:  # made elsewhere: the stream brings it into the open page
        sid = c.post("/v1/sandboxes", json={"template_name": "base"}).json()["id"]
    row = f"#sandbox-list tr:has(a:text-is('{sid}'))"
    page.wait_for_selector(f"{row} .status.running")
    page.click(f"{row} button[data-action=pause]")
    page.wait_for_selector(f"{row} .status.paused")
    page.click(f"{row} button[data-action=resume]")
    page.wait_for_selector(f"{row} .status.running")
    page.screenshot(path=str(tmp_path / "dashboard-sandboxes.png"))
    print("screenshot:", tmp_path / "dashboard-sandboxes.png")
    page.click(f"{row} button[data-action=kill]")
    page.wait_for_selector(row, state="detached")
    assert page.locator(f"#lifecycle-feed li:has-text('{sid}')").count() >= 4  # created, paused, resumed, killed
    page.close()
    assert not problems, problems


def test_a_webhook_and_its_deliveries(cp, browser):
    receiver = Receiver()
    try:
        with cp.client() as c:
            hook = c.post("/events/webhooks", json={"name": "dash-hook", "url": receiver.url, "enabled": True,
                                                    "events": ["sandbox.lifecycle.created"],
                                                    "signatureSecret": "dash-secret"}).json()
            sid = c.post("/v1/sandboxes", json={"template_name": "base"}).json()["id"]
            wait_for(lambda: c.get(f"/events/webhooks/{hook['id']}/deliveries").json(), what="a delivery")
            c.delete(f"/v1/sandboxes/{sid}")
        problems: list[str] = []
        page = watched_page(browser, problems)
        login(page, cp.base, cp.key)
        page.click("#nav a[href='#/webhooks']")
        page.click(f"button[data-webhook='{hook['id']}']")
        page.wait_for_selector(f"#deliveries td:has-text('sandbox.lifecycle.created {sid}')")
        page.close()
        assert not problems, problems
    finally:
        receiver.close()


def test_assets_come_gzipped_to_who_asks_and_plain_otherwise(cp):
    plain_bytes = (STATIC / "app.js").read_bytes()
    with httpx.stream("GET", cp.base + "/dashboard/assets/app.js", headers={"accept-encoding": "gzip"}) as packed:
        assert packed.headers["content-encoding"] == "gzip" and "content-security-policy" in packed.headers
        assert gzip.decompress(b"".join(packed.iter_raw())) == plain_bytes
    with httpx.stream("GET", cp.base + "/dashboard/assets/app.js", headers={"accept-encoding": "identity"}) as plain:
        assert "content-encoding" not in plain.headers and b"".join(plain.iter_raw()) == plain_bytes
        etag = plain.headers["etag"]
    again = httpx.get(cp.base + "/dashboard/assets/app.js", headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b""
