"""The start queue in the console, in Debian's headless Chromium against a real
server and the real Docker engine with 2 simulated GPUs: a refused start names the free
count and offers its ways out, the queue button waits in line with the place shown, the
instance starts live when another user's GPUs come back; the create form queues too."""

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
MODEL = "A100-80GB"


@pytest.fixture(scope="module")
def console(docker_client):
    srv = Server(simulated_gpus=f"{MODEL}:2").start()
    srv.add_user("ops", admin=True).post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    srv.ada, srv.ben = srv.add_user("ada"), srv.add_user("ben")
    yield srv
    srv.close()


def make(api, name, gpus):
    made = api.post("/instances", json={"image": "debian-12", "name": name, "gpu_model": MODEL, "gpu_count": gpus})
    assert made.status_code == 201, made.text
    return wait_status(api, made.json()["id"], "running")


def test_a_refused_start_offers_the_queue_and_the_queued_instance_starts_live(console, browser):
    ada, ben = console.ada, console.ben
    mine = make(ada, "mine", 1)
    ada.post(f"/instances/{mine['id']}/stop").raise_for_status()
    wait_status(ada, mine["id"], "stopped")
    hog = make(ben, "hog", 2)

    context, page = sign_in(browser, console.url, "ada")
    row = page.locator("tr.instance", has_text="mine")
    row.locator("[data-action=start]").click()
    toast = page.locator("#toast")
    expect(toast).to_contain_text("Only 0 of the 1 GPUs it needs are free on node local")
    expect(toast).to_contain_text("start it without GPU")
    expect(toast).to_contain_text("queue for GPUs")
    expect(row.locator(".badge.status")).to_have_text("stopped")

    page.evaluate("window.__sameDocument = true")
    row.locator("[data-action=start-queue]").click()
    expect(row.locator(".badge.status")).to_have_text("queued")
    expect(row.locator(".queue-pos")).to_have_text("in line: #1")
    expect(row.locator("[data-action=stop]")).to_be_enabled()
    shot(page, "instances-queued")

    ben.post(f"/instances/{hog['id']}/stop").raise_for_status()  # its GPUs come back: mine starts by itself
    expect(row.locator(".badge.status")).to_have_text("running", timeout=60_000)
    expect(row.locator(".queue-pos")).to_have_text("")
    assert page.evaluate("window.__sameDocument") is True

    # The create form: 1 of 2 free, asking for 2 offers the queue; queued, then cancelled.
    page.click("nav >> text=Rent a GPU")
    page.select_option("#gpu_model", MODEL)
    page.select_option("#gpu_count", "2")
    expect(page.locator("#availability")).to_contain_text("none free now")
    expect(page.locator("#create-submit")).to_be_disabled()
    page.check("#queue")
    expect(page.locator("#create-submit")).to_be_enabled()
    page.select_option("#image", "debian-12")
    page.fill("#name", "later")
    page.click("#create-submit")
    expect(page).to_have_url(re.compile(r"/instances\?created="))
    later = page.locator("tr.instance", has_text="later")
    expect(later.locator(".badge.status")).to_have_text("queued")
    expect(later.locator(".queue-pos")).to_have_text("in line: #1")
    later.locator("[data-action=stop]").click()
    expect(later.locator(".badge.status")).to_have_text("stopped")
    context.close()
