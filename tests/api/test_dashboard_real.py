"""Through crun (marked real): a person's walk through the dashboard in headless Chromium. Log in, create a
sandbox, watch its CPU curve climb while it burns CPU, type into its terminal, kill it and see the kill in its
timeline. Screenshots land in the test's tmp dir (their paths are printed), with the page's weight and first
paint as the browser measured them."""
from __future__ import annotations

import json
import os

import httpx
import pytest

from support.browser import chromium, login, watched_page
from support.real import require_real
from support.server import running_server

TEMPLATES = os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates")
PAGE_COST = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const res = performance.getEntriesByType("resource");
  const paint = Object.fromEntries(performance.getEntriesByType("paint").map((p) => [p.name, p.startTime]));
  return {bytes: nav.encodedBodySize + res.reduce((n, r) => n + r.encodedBodySize, 0),
          requests: 1 + res.length, first_paint_ms: paint["first-paint"],
          first_contentful_paint_ms: paint["first-contentful-paint"]};
}"""


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    require_real()
    yield from running_server(tmp_path_factory, backend="crun", SANDBOXD_TEMPLATES_PATH=TEMPLATES)


def shot(page, tmp_path, name: str) -> None:
    path = tmp_path / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print("screenshot:", path)


@pytest.mark.real
@pytest.mark.slow
def test_a_sandbox_lives_and_dies_in_the_dashboard(real, tmp_path):
    problems: list[str] = []
    with chromium() as browser:
        page = watched_page(browser, problems)
        login(page, real.base, real.key)
        page.wait_for_selector("#create-template option[value=base]", state="attached")
        cold = page.evaluate(PAGE_COST)
        page.reload()  # the key is the tab's: a reload stays logged in
        page.wait_for_selector("#create-template option[value=base]", state="attached")
        warm = page.evaluate(PAGE_COST)
        print("page weight and paint, first load:", json.dumps(cold), "reload:", json.dumps(warm))
        assert cold["bytes"] > 0 and cold["first_contentful_paint_ms"] is not None

        page.select_option("#create-template", "base")
        page.click("#create button[type=submit]")
        page.wait_for_url("**/dashboard/#/sandbox/*", timeout=120_000)
        sid = page.url.rsplit("/", 1)[1]
        page.wait_for_selector("#sandbox-status .status.running")
        # Idle first (the start's own burst has passed), so the climb below is the busy loop's.
        cpu = "document.getElementById('chart-cpu').dataset"
        page.wait_for_function(f"() => Number({cpu}.points) >= 2 && Number({cpu}.last) < 5", timeout=60_000)

        token = page.evaluate(f"sessionStorage.getItem('sandboxd.token.{sid}')")  # the create answer's
        r = httpx.post(real.gateway + "/commands/background", headers={"Authorization": f"Bearer {token}"},
                       json={"command": "timeout 300 sh -c 'while :; do :; done'"}, timeout=60)
        assert r.status_code == 200, r.text
        # A spinning loop on its one vCPU: the curve climbs well clear of idle. The test host's two cores are
        # shared, so the loop may get a third of a core, not all of it.
        page.wait_for_function(f"() => Number({cpu}.last) > 15", timeout=60_000)
        shot(page, tmp_path, "cpu")

        page.click("#terminal-open")
        page.wait_for_selector("#terminal[data-state=open]")
        page.click("#terminal")
        page.keyboard.type("echo dash-$((6*7))\n")
        page.wait_for_function("() => document.querySelector('#terminal .xterm-rows').innerText.includes('dash-42')",
                               timeout=30_000)
        shot(page, tmp_path, "terminal")

        page.click("button[data-action=kill]")
        page.wait_for_selector("#timeline li[data-type$='.killed']", timeout=60_000)
        page.wait_for_selector("#sandbox-status .status.killed")
        shot(page, tmp_path, "killed")
        page.close()
    with real.client() as c:
        assert c.get(f"/v1/sandboxes/{sid}").status_code == 404
    assert not problems, problems


@pytest.mark.real
def test_the_files_browser_walks_a_sandbox_through_the_gateway(real, tmp_path):
    """Browse into a folder, upload, view, download, delete: every call a cross-origin fetch to the gateway."""
    payload = "hello from the files browser\n" * 3
    upload = tmp_path / "note.txt"
    upload.write_text(payload)
    with real.client() as c:
        sb = c.post("/v1/sandboxes", json={"template_name": "base"}).json()
    problems: list[str] = []
    try:
        httpx.post(real.gateway + "/files/mkdir", headers={"Authorization": f"Bearer {sb['auth_token']}"},
                   json={"path": "docs"}, timeout=60).raise_for_status()
        with chromium() as browser:
            page = watched_page(browser, problems)
            page.on("dialog", lambda d: d.accept())  # the delete's confirmation
            login(page, real.base, real.key)
            page.goto(f"{real.base}/dashboard/#/sandbox/{sb['id']}")
            page.click("#files-open")
            home = page.wait_for_selector("#files-list[data-path]").get_attribute("data-path")  # the workspace
            page.click("#files-list a.dir[data-name=docs]")
            page.wait_for_selector(f"#files-list[data-path='{home}/docs']")
            page.set_input_files("#files-upload", str(upload))
            page.click("#files-list a.file[data-name='note.txt']")
            page.wait_for_function("() => document.querySelector('#files-view pre')?.textContent.includes('hello from')")
            assert page.text_content("#files-view pre") == payload
            with page.expect_download() as saved:
                page.click("#files-list button[data-download='note.txt']")
            assert open(saved.value.path(), "rb").read() == payload.encode()
            shot(page, tmp_path, "files")
            page.click("#files-list button[data-delete='note.txt']")
            page.wait_for_selector("#files-list a[data-name='note.txt']", state="detached")
            page.click("#files-up")
            page.wait_for_selector(f"#files-list[data-path='{home}'] a.dir[data-name=docs]")
            token = page.evaluate(f"sessionStorage.getItem('sandboxd.token.{sb['id']}')")  # the page's own
            page.close()
        # the page's token and the creator's both work: the page asked for one more and revoked none
        for held in (token, sb["auth_token"]):
            r = httpx.get(real.gateway + "/files/exists", params={"path": f"{home}/docs/note.txt"},
                          headers={"Authorization": f"Bearer {held}"}, timeout=60)
            assert r.status_code == 200 and r.json()["exists"] is False, r.text
    finally:
        with real.client() as c:
            c.delete(f"/v1/sandboxes/{sb['id']}")
    assert not problems, problems
