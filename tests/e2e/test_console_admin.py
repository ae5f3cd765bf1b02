"""The console's clone, progress, admin images and audit pages, and the port form's errors,
in Debian's headless Chromium (Playwright) against a real `dockyard serve` with simulated
GPUs and the real Docker engine. Set up as tests/e2e/test_console.py; screenshots of the
new pages go to test-artifacts/console/ as well.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.browser import CHROMIUM, PASSWORD, shot, sign_in
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
    srv.mia = srv.add_user("mia")
    yield srv
    srv.close()


def test_clone_from_the_console_shows_progress_then_the_clone_runs(console, browser):
    api = console.mia
    source = api.post("/instances", json={"image": "debian-12", "gpu_model": "A100-80GB", "gpu_count": 1,
                                          "name": "lab"}).json()
    wait_status(api, source["id"], "running")
    # Some data, so the copy has something to do.
    api.post(f"/instances/{source['id']}/exec", json={"command": [
        "sh", "-c", "echo hi > /root/hello && head -c 30000000 /dev/urandom > /root/data/blob"]}).raise_for_status()

    context, page = sign_in(browser, console.url, "mia")
    row = page.locator("tr.instance", has_text="lab")
    expect(row.locator(".badge.status")).to_have_text("running")
    page.once("dialog", lambda dialog: dialog.accept("lab-copy"))
    row.locator("[data-action=clone]").click()

    # The operation's card: the clone's name, a bar that ends full, then "done".
    card = page.locator("#operations .op[data-kind=clone]")
    expect(card).to_contain_text("Clone into: lab-copy", timeout=30_000)
    expect(card.locator(".op-phase")).to_have_text("done", timeout=120_000)
    assert card.locator("progress").get_attribute("value") == "100"
    expect(card.locator(".op-percent")).to_have_text("100%")
    clone_row = page.locator("tr.instance", has_text="lab-copy")
    expect(clone_row.locator(".badge.status")).to_have_text("running", timeout=120_000)
    shot(page, "instances-clone")
    clone_id = clone_row.get_attribute("data-id")
    out = api.post(f"/instances/{clone_id}/exec", json={"command": ["sh", "-c", "cat /root/hello; wc -c < /root/data/blob"]})
    assert out.json()["output"] == "hi\n30000000\n"

    # From the detail page too: a bad name is refused with the server's reason.
    page.goto(f"/instances/{source['id']}")
    page.once("dialog", lambda dialog: dialog.accept("lab-copy"))
    page.locator(".detail [data-action=clone]").click()
    expect(page.locator("#toast")).to_contain_text("already have an instance named 'lab-copy'")
    context.close()
    for instance_id in (clone_id, source["id"]):
        api.delete(f"/instances/{instance_id}").raise_for_status()


def test_a_bad_port_shows_the_servers_message_next_to_the_form(console, browser):
    api = console.mia
    instance = api.post("/instances", json={"image": "debian-12", "gpu_count": 0, "name": "web"}).json()
    wait_status(api, instance["id"], "running")
    context, page = sign_in(browser, console.url, "mia")
    page.goto(f"/instances/{instance['id']}")
    form = page.locator("#port-form")
    for value, words in (("22", "port: 22 is reserved for SSH"), ("8888", "reserved for JupyterLab"),
                         ("0", "port: 0 is outside 1-65535"), ("70000", "port: 70000 is outside 1-65535")):
        form.locator("input[name=port]").fill(value)
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            form.locator("button").click()
        assert answer.value.status == 400
        expect(page.locator("#port-error")).to_contain_text(words)
    form.locator("input[name=port]").fill("6006")
    form.locator("button").click()
    expect(page.locator("#port-error")).to_have_count(0)
    expect(page.locator(".card", has_text="6006").first).to_be_visible()
    form.locator("input[name=port]").fill("6006")
    form.locator("button").click()
    expect(page.locator("#port-error")).to_contain_text("port 6006 is already exposed")
    shot(page, "port-error")
    assert [p["port"] for p in api.get(f"/instances/{instance['id']}/ports").json()] == [6006]
    context.close()
    api.delete(f"/instances/{instance['id']}").raise_for_status()


def test_admin_images_page_pulls_with_live_progress_and_saves_show_too(console, browser):
    api = console.mia
    instance = api.post("/instances", json={"image": "debian-12", "gpu_count": 0, "name": "env"}).json()
    wait_status(api, instance["id"], "running")

    # A user's save: its progress shows on their page, then the image is listed for the admin.
    context, page = sign_in(browser, console.url, "mia")
    page.once("dialog", lambda dialog: dialog.accept("myenv:v1"))
    page.locator("tr.instance", has_text="env").locator("[data-action=save]").click()
    card = page.locator("#operations .op[data-kind=save]")
    expect(card).to_contain_text("mia/myenv:v1", timeout=30_000)
    expect(card.locator(".op-phase")).to_have_text("done", timeout=120_000)
    assert page.goto("/admin/images").status == 404 and page.goto("/admin/audit").status == 404
    context.close()

    context, page = sign_in(browser, console.url, "ops")
    page.click("nav >> text=Admin")
    page.click("#admin-nav >> text=Images")
    expect(page).to_have_url(re.compile(r"/admin/images$"))
    shared = page.locator("#shared-images")
    expect(shared).to_contain_text("debian-12")
    expect(shared).to_contain_text("pytorch-2.13-cpu")
    saved = page.locator("#saved-images tr", has_text="mia/myenv:v1")
    expect(saved).to_contain_text("mia")
    expect(saved).to_contain_text("ready")

    # Register the base image under a second name, then pull it with live progress.
    page.fill("#register-form input[name=ref]", BASE_IMAGE)
    page.fill("#register-form input[name=name]", "debian-extra")
    page.click("#register-form button")
    row = page.locator("#shared-images tr[data-image=debian-extra]")
    expect(row).to_contain_text("registered")
    expect(row).to_contain_text("local")
    page.fill("#register-form input[name=ref]", "no such ref!")
    page.fill("#register-form input[name=name]", "broken")
    page.click("#register-form button")
    expect(page.locator("#admin-error")).to_contain_text("ref")

    # The start's answer held back until the pull has ended: its events come first, and
    # the page must still take the answer for the older view it is, and reload.
    def answer_late(route):
        answer = route.fetch()
        time.sleep(3)
        route.fulfill(response=answer)

    page.route("**/console/admin/images/debian-extra/prepare", answer_late)
    page.evaluate("window.__beforePull = true")
    page.locator("#shared-images tr[data-image=debian-extra] button.prepare").click()
    card = page.locator("#operations .op[data-kind=pull]")
    expect(card).to_contain_text("Pull: debian-extra")
    expect(card.locator(".op-log")).to_contain_text("[local]")
    expect(card.locator(".op-percent")).to_have_text("100%", timeout=60_000)
    # Its end reloads the page (the tables show what it made); the card stays a while.
    # A function, not an expression: across the reload Playwright would eval the string, which the CSP refuses.
    page.wait_for_function("() => !window.__beforePull", timeout=10_000)
    expect(card.locator(".op-phase")).to_have_text("done")
    shot(page, "admin-images")

    # Delete: refused while in use, done when not.
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#shared-images tr[data-image=debian-12] button.danger").click()
    expect(page.locator("#admin-error")).to_contain_text("image debian-12 is used by instance")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#shared-images tr[data-image=debian-extra] button.danger").click()
    expect(page.locator("#shared-images tr[data-image=debian-extra]")).to_have_count(0)
    context.close()
    api.delete(f"/instances/{instance['id']}").raise_for_status()


def test_audit_log_page_lists_the_admins_price_change_and_recharge(console, browser):
    context, page = sign_in(browser, console.url, "ops")
    page.goto("/admin")
    page.select_option("form[action='/admin/prices'] select[name=kind]", "gpu")
    page.fill("form[action='/admin/prices'] input[name=model]", "RTX-4090")
    page.fill("form[action='/admin/prices'] input[name=price]", "4.20")
    page.click("form[action='/admin/prices'] button")
    page.select_option("#recharge-form select[name=user]", "mia")
    page.fill("#recharge-form input[name=amount]", "25")
    page.click("#recharge-form button")
    expect(page.locator("tr", has_text="mia").first).to_contain_text("25.00")

    page.click("#admin-nav >> text=Audit log")
    audit = page.locator("#audit")
    first = audit.locator("tbody tr").first
    expect(first).to_contain_text("wallet.recharge")  # newest first
    expect(audit.locator("tr", has_text="price.set")).to_contain_text("gpu RTX-4090")
    expect(audit.locator("tr", has_text="price.set")).to_contain_text("4.2000")
    expect(audit.locator("tr", has_text="price.set")).to_contain_text("ops")
    shot(page, "admin-audit")
    page.select_option("#audit-filter select[name=action]", "price.set")
    page.click("#audit-filter button")
    expect(page).to_have_url(re.compile(r"action=price.set"))
    assert {a for a in audit.locator("tbody code").all_inner_texts()} == {"price.set"}

    page.click("a[data-lang=zh]")
    expect(page.locator("h1")).to_have_text("审计日志")
    shot(page, "admin-audit-zh")
    page.click("a[data-lang=en]")
    context.close()

    # A non-admin's forged form post is refused, and logs nothing.
    http = httpx.Client(base_url=console.url, follow_redirects=False)
    login = http.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)
    http.post("/login", data={"user": "mia", "password": PASSWORD, "csrf": token})
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', http.get("/instances").text).group(1)
    assert http.post("/admin/recharge", data={"csrf": csrf, "user": "mia", "amount": "1000"}).status_code == 404
    assert console.mia.get("/billing/balance").json()["balance"].startswith("25.")
