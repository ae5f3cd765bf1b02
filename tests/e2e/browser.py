"""What the console's browser tests share: Debian's Chromium, signing in, screenshots."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.harness import REPO

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = REPO / "test-artifacts" / "console"
PASSWORD = "correct-horse"
NEEDS_CHROMIUM = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")


def sign_in(browser, url: str, user: str):
    context = browser.new_context(base_url=url, viewport={"width": 1360, "height": 860}, locale="en-US",
                                  timezone_id="Asia/Shanghai")
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
    page = context.new_page()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/instances$"))
    return context, page


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
