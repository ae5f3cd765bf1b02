"""The console offers shares of one GPU: the market lists them at their price with what
their mode isolates, and the create form rents one at half price."""

from __future__ import annotations

import re

import pytest

from tests.e2e.browser import NEEDS_CHROMIUM, shot, sign_in
from tests.harness import BASE_IMAGE, Server, wait_status

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300), NEEDS_CHROMIUM]


@pytest.fixture(scope="module")
def shared(docker_client):
    srv = Server(simulated_gpus="RTX-4090:2", gpu_sharing="mps:2").start()
    srv.admin = srv.add_user("ops", admin=True)
    srv.admin.post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    srv.admin.post("/billing/prices", json={"kind": "gpu", "model": "RTX-4090", "price": "8"}).raise_for_status()
    srv.mia = srv.add_user("mia")
    srv.admin.post("/billing/credit", json={"user": "mia", "amount": "100"}).raise_for_status()
    yield srv
    srv.close()


def test_market_and_create_offer_a_half(shared, browser):
    context, page = sign_in(browser, shared.url, "mia")
    page.goto("/market")
    card = page.locator(".card.gpu[data-model='RTX-4090']")
    expect(card.locator(".share[data-share='0.5']")).to_contain_text("4.00")  # half of 8.00
    expect(card.locator(".share[data-share='0.5']")).to_contain_text("4 free")
    expect(card.locator(".isolation")).to_contain_text("memory")
    shot(page, "market-shares")

    page.goto("/create?model=RTX-4090")
    page.select_option("#gpu_share", "0.5")
    expect(page.locator("#price")).to_contain_text("4.00")
    page.select_option("#image", "debian-12")
    page.fill("#name", "half")
    page.click("#create-submit")
    expect(page).to_have_url(re.compile(r"/instances"))
    (created,) = [i for i in shared.mia.get("/instances").json() if i["name"] == "half"]
    assert created["gpu_share"] == "0.5" and created["price_per_hour"] == "4.00"
    wait_status(shared.mia, created["id"], "running")
    page.goto("/instances")
    expect(page.locator(f".instance[data-id='{created['id']}'] .gpus")).to_contain_text("0.5 × RTX-4090")
    shared.mia.delete(f"/instances/{created['id']}").raise_for_status()
    wait_status(shared.mia, created["id"], "released")
    context.close()
