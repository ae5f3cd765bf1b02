"""The console's package-mirror pages (the site's for admins, each user's additions) with
their refusals, and the instance page's "Open TensorBoard" for an exposed 6006, in
Debian's headless Chromium against a real `dockyard serve`."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from tests.e2e.browser import CHROMIUM, shot, sign_in
from tests.harness import BASE_IMAGE, Server, wait_status

playwright_sync = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600),
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")]


@pytest.fixture(scope="module")
def console(docker_client):
    srv = Server().start()
    srv.admin = srv.add_user("ops", admin=True)
    srv.admin.post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    srv.lea = srv.add_user("lea")
    yield srv
    srv.close()


def save(page, form_id: str, status: int):
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.locator(f"#{form_id} button").click()
    assert answer.value.status == status


def test_site_mirrors_and_a_users_additions_with_refusals(console, browser):
    context, page = sign_in(browser, console.url, "ops")
    page.goto("/admin/mirrors")
    form = page.locator("#mirrors-form")
    form.locator("input[name=pip_index_url]").fill("ftp://mirror.site.example/simple")
    save(page, "mirrors-form", 400)
    expect(page.locator("#mirrors-error")).to_contain_text("is not an http:// or https:// URL")
    form.locator("input[name=pip_index_url]").fill("https://mirror.site.example/simple/")
    save(page, "mirrors-form", 303)
    expect(page.locator("#mirrors-error")).to_have_count(0)
    expect(form.locator("input[name=pip_index_url]")).to_have_value("https://mirror.site.example/simple/")
    context.close()

    context, page = sign_in(browser, console.url, "lea")
    page.goto("/mirrors")
    expect(page.locator("#site-mirrors")).to_contain_text("https://mirror.site.example/simple/")
    form = page.locator("#mirrors-form")
    form.locator("textarea[name=ca_bundle]").fill("this is not PEM")
    save(page, "mirrors-form", 400)
    expect(page.locator("#mirrors-error")).to_contain_text("ca_bundle: not a PEM bundle")
    form.locator("textarea[name=ca_bundle]").fill("")
    form.locator("input[name=conda_channel_url]").fill("https://conda.lea.example/channel")
    save(page, "mirrors-form", 303)
    shot(page, "mirrors")
    context.close()
    mine = console.lea.get("/mirrors").json()["mine"]
    assert mine == {"pip_index_url": None, "apt_mirror_url": None, "ca_bundle": None,
                    "conda_channel_url": "https://conda.lea.example/channel"}


def test_the_instance_page_offers_open_tensorboard_for_6006(console, browser):
    api = console.lea
    instance = api.post("/instances", json={"image": "debian-12", "gpu_count": 0, "name": "tb"}).json()
    wait_status(api, instance["id"], "running")
    context, page = sign_in(browser, console.url, "lea")
    page.goto(f"/instances/{instance['id']}")
    expect(page.locator("#open-tensorboard")).to_have_count(0)
    page.locator("#port-form input[name=port]").fill("6006")
    page.locator("#port-form button").click()
    link = page.locator("#open-tensorboard")
    expect(link).to_be_visible()
    assert link.get_attribute("href") == f"/instances/{instance['id']}/ports/6006/"
    # The link leads to the instance's own host, with a ticket for it (ports are served there).
    opened = page.request.get(link.get_attribute("href"), max_redirects=0)
    assert opened.status == 303
    assert opened.headers["location"].startswith(f"{console.instance_url(instance['id'])}/_dockyard/open?ticket=")
    assert quote(f"/instances/{instance['id']}/ports/6006/", safe="") in opened.headers["location"]
    expect(page.locator("#ports")).to_contain_text("--bind_all")
    page.locator("#port-form input[name=port]").fill("8501")
    page.locator("#port-form input[name=keep_path]").check()
    page.locator("#port-form button").click()
    expect(page.locator("#ports")).to_contain_text(f"/instances/{instance['id']}/ports/8501/")
    shot(page, "open-tensorboard")
    context.close()
    assert [(p["port"], p["keep_path"]) for p in api.get(f"/instances/{instance['id']}/ports").json()] == [
        (6006, False), (8501, True)]
    api.delete(f"/instances/{instance['id']}").raise_for_status()
