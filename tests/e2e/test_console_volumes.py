"""The volumes page and the create form's volume picker, in Debian's headless Chromium
against a real server and the real Docker engine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.harness import BASE_IMAGE, Server, wait_status

playwright_sync = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect  # noqa: E402

from tests.e2e.browser import CHROMIUM, shot, sign_in  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300),
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")]


@pytest.fixture(scope="module")
def console(docker_client):
    srv = Server().start()
    srv.add_user("ops", admin=True).post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    srv.vic = srv.add_user("vic")
    yield srv
    srv.close()


def test_volumes_page_and_the_create_forms_picker(console, browser):
    context, page = sign_in(browser, console.url, "vic")
    page.click("nav >> text=Volumes")
    expect(page.locator("main")).to_contain_text("No volumes yet")

    # Bad input is refused with its reason; nothing is made.
    page.fill("#volume-form input[name=name]", "scratch")
    page.fill("#volume-form input[name=size_gb]", "999999999")
    page.click("#volume-form button")
    expect(page.locator("#volumes-error")).to_contain_text("size_gb")
    assert console.vic.get("/volumes").json() == []

    page.fill("#volume-form input[name=name]", "scratch")
    page.fill("#volume-form input[name=size_gb]", "1")
    page.click("#volume-form button")
    row = page.locator("tr[data-volume=scratch]")
    expect(row).to_contain_text("1 GB")

    # The picker offers it; the instance mounts it as its data disk.
    page.click("nav >> text=Rent a GPU")
    page.select_option("#gpu_count", "0")
    page.select_option("#image", "debian-12")
    page.fill("#name", "with-volume")
    page.select_option("#volume", "scratch")
    shot(page, "create-volume")
    page.click("#create-submit")
    expect(page).to_have_url(re.compile(r"/instances\?created="))
    instance = wait_status(console.vic, "with-volume", "running")
    assert instance["volumes"] == ["scratch:/root/data"]

    # In use: listed with its instance, its removal refused.
    page.click("nav >> text=Volumes")
    expect(row).to_contain_text("with-volume")
    expect(row.locator("form.remove button")).to_be_disabled()

    console.vic.post(f"/instances/{instance['id']}/stop").raise_for_status()
    wait_status(console.vic, instance["id"], "stopped")
    page.reload()
    row.locator("form.resize input[name=size_gb]").fill("2")
    row.locator("form.resize button").click()
    expect(row).to_contain_text("2 GB")
    assert console.vic.get("/volumes/scratch").json()["size_gb"] == 2
    shot(page, "volumes")

    console.vic.delete(f"/instances/{instance['id']}").raise_for_status()
    wait_status(console.vic, instance["id"], "released")
    page.reload()
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("form.remove button").click()
    expect(page.locator("main")).to_contain_text("No volumes yet")
    context.close()
