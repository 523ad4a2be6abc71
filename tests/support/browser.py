"""Headless Chromium driven by Playwright, for the dashboard tests.

Debian's `chromium` (scripts/test.sh installs it) is driven through `executable_path`: Playwright's own browser
downloads are never used. A page records its console errors and CSP refusals, so a test can assert none.
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from typing import Iterator

from support.real import unavailable

CHROMIUM = os.environ.get("SANDBOXD_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@contextmanager
def chromium() -> Iterator:
    """A launched headless browser; outside CI a missing Chromium or Playwright is a skip."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed (pip install -e '.[test]')")
    if not os.path.exists(CHROMIUM):
        unavailable("chromium is not installed (scripts/test.sh installs Debian's chromium)")
    with sync_playwright() as pw:
        # --no-sandbox: the tests run as root, where Chromium's own sandbox refuses to start.
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def watched_page(browser, problems: list[str]):
    """A new page whose console errors and failed requests land in `problems`."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    return page


def login(page, base: str, key: str) -> None:
    page.goto(base + "/")
    page.fill("#api-key", key)
    page.click("#login button[type=submit]")
    page.wait_for_selector("#nav:not([hidden])")
