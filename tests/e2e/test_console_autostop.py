"""The auto-stop policy and the notifications page in the console, in Debian's
headless Chromium against a real server and the real Docker engine. One policy minute
lasts 2 seconds here (`autostop_minute_s`, a setting meant for tests)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.harness import BASE_IMAGE, Server, wait_status

playwright_sync = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect  # noqa: E402

from tests.e2e.browser import CHROMIUM, SHOTS, shot, sign_in  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300),
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")]


@pytest.fixture(scope="module")
def console(docker_client):
    srv = Server(autostop_interval_s="1", autostop_minute_s="2").start()
    srv.admin = srv.add_user("ops", admin=True)
    srv.admin.post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    srv.lea = srv.add_user("lea")
    srv.add_user("max")
    yield srv
    srv.close()


def test_auto_stop_policy_and_notifications(console, browser):
    context, page = sign_in(browser, console.url, "lea")
    expect(page.locator("#unread-count")).to_be_hidden()

    # The create form: the policy shows under the price before confirming.
    page.click("nav >> text=Rent a GPU")
    page.select_option("#gpu_count", "0")
    page.select_option("#image", "debian-12")
    page.fill("#name", "nap")
    summary = page.locator("#autostop-summary")
    expect(summary).to_have_text("Auto-stop: off, it runs until you stop it")
    page.select_option("#auto_stop_max", "480")
    expect(summary).to_have_text("Auto-stop: stops after 8 h running")
    expect(page.locator("#auto_stop_idle_custom")).to_be_hidden()
    page.select_option("#auto_stop_idle", "custom")
    page.fill("#auto_stop_idle_custom", "soon")
    page.click("#create-submit")
    expect(page.locator("#create-error")).to_contain_text("auto_stop_idle_minutes")  # refused, nothing made
    assert console.lea.get("/instances").json() == []

    page.select_option("#gpu_count", "0")
    page.select_option("#image", "debian-12")
    page.select_option("#auto_stop_max", "480")
    page.select_option("#auto_stop_idle", "custom")
    page.fill("#auto_stop_idle_custom", "3m")
    expect(summary).to_have_text("Auto-stop: stops after 3m idle · stops after 8 h running")
    shot(page, "create-autostop")
    page.click("#create-submit")
    expect(page).to_have_url(re.compile(r"/instances\?created="))
    instance_id = page.locator("tr.instance", has_text="nap").get_attribute("data-id")
    made = console.lea.get(f"/instances/{instance_id}").json()
    assert (made["auto_stop_idle_minutes"], made["auto_stop_max_minutes"]) == (3, 480)

    # The instance page shows the policy and, the stop being near (warned 10 policy minutes
    # ahead), a banner whose Keep running button defers it; then it stops, live, and the
    # badge counts the notices (the warnings and the stop).
    page.click(f"a[href='/instances/{instance_id}']")
    expect(page.locator("#autostop-idle")).to_have_text("3 min")
    expect(page.locator("#autostop-max")).to_have_text("8 h")
    wait_status(console.lea, instance_id, "running", timeout=60)
    banner = page.locator("#autostop-banner")
    for _ in range(20):
        page.reload()
        if banner.count():
            break
        page.wait_for_timeout(300)
    expect(banner).to_contain_text("auto-stop warning: no SSH or Jupyter activity for 3 min")
    shot(page, "autostop-banner")
    page.click("#autostop-keep")
    expect(page.locator("#events")).to_contain_text("auto-stop: kept running by lea")
    expect(page.locator(".detail .badge.status")).to_have_text("stopped", timeout=60_000)
    unread = len(console.lea.get("/notifications", params={"unread": True}).json())
    assert unread >= 3  # two warnings, then the stop
    expect(page.locator("#unread-count")).to_have_text(str(unread), timeout=10_000)
    page.reload()
    expect(page.locator("#events")).to_contain_text("auto-stop: no SSH or Jupyter activity for 3 min")

    # The notifications page: newest first, unread until marked.
    page.click("#nav-notifications")
    row = page.locator("#notifications tr.note").first
    expect(row).to_contain_text("instance nap was stopped")
    expect(page.locator("#notifications tr.note").nth(1)).to_contain_text("unless you keep it running")
    expect(row).to_contain_text("auto-stop")
    expect(row).to_have_class(re.compile("unread"))
    expect(row.locator("time")).to_have_text(re.compile(r"\d"))  # formatted in the browser's zone
    shot(page, "notifications")

    # Another user sees none of it and cannot change the policy.
    other, intruder = sign_in(browser, console.url, "max")
    intruder.click("#nav-notifications")
    expect(intruder.locator("#notifications-empty")).to_be_visible()
    expect(intruder.locator("#unread-count")).to_be_hidden()
    csrf = intruder.locator('meta[name="csrf-token"]').get_attribute("content")
    forged = intruder.request.post(f"/instances/{instance_id}/autostop",
                                   form={"csrf": csrf, "auto_stop_idle": "off", "auto_stop_max": "off"})
    assert forged.status == 404
    other.close()
    assert console.lea.get(f"/instances/{instance_id}").json()["auto_stop_idle_minutes"] == 3

    page.click("#mark-read button")
    expect(page.locator("#unread-count")).to_be_hidden()
    expect(page.locator("#notifications tr.note.unread")).to_have_count(0)

    # Change the policy on the instance page (a CSRF-protected form); bad input changes nothing.
    page.goto(f"/instances/{instance_id}")
    page.select_option("#auto_stop_idle", "custom")
    page.fill("#auto_stop_idle_custom", "9d")
    page.click("#autostop-submit")
    expect(page.locator("#autostop-error")).to_contain_text("Stop when idle for")
    expect(page.locator("#autostop-idle")).to_have_text("3 min")
    page.select_option("#auto_stop_idle", "30")
    page.select_option("#auto_stop_max", "off")
    page.click("#autostop-submit")
    expect(page.locator("#autostop-idle")).to_have_text("30 min")
    expect(page.locator("#autostop-max")).to_have_text("off")
    page.locator("#autostop").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "instance-autostop.png"))
    changed = console.lea.get(f"/instances/{instance_id}").json()
    assert (changed["auto_stop_idle_minutes"], changed["auto_stop_max_minutes"]) == (30, None)
    assert page.request.post(f"/instances/{instance_id}/autostop", form={"auto_stop_idle": "off"}).status == 403

    # The other rules on the same form: a stop time (ahead, with a zone), the start command's
    # exit, a process's exit (only one running now: this instance is stopped). Refused: the
    # reason by its field, nothing changed; the rest kept as they were when saved.
    page.fill("#auto_stop_at", "2020-01-01T08:00+08:00")
    page.click("#autostop-submit")
    expect(page.locator("#autostop-error")).to_contain_text("Stop at: a time ahead")
    page.fill("#auto_stop_at", "not a time")
    page.click("#autostop-submit")
    expect(page.locator("#autostop-error")).to_contain_text("Stop at: a time ahead")
    page.fill("#auto_stop_when_exits", "train.py")
    page.click("#autostop-submit")
    expect(page.locator("#autostop-error")).to_contain_text("Stop when this process exits")
    assert console.lea.get(f"/instances/{instance_id}").json()["auto_stop_at"] is None
    page.fill("#auto_stop_at", "2099-01-01T08:00+08:00")
    page.fill("#auto_stop_when_exits", "")
    page.check("#auto_stop_on_exit")
    page.click("#autostop-submit")
    expect(page.locator("#autostop-rules")).to_contain_text("the start command exits")
    expect(page.locator("#auto_stop_on_exit")).to_be_checked()
    expect(page.locator("#auto_stop_at")).to_have_value("2099-01-01T00:00+00:00")
    ruled = console.lea.get(f"/instances/{instance_id}").json()
    assert ruled["auto_stop_on_exit"] is True and ruled["auto_stop_at"].startswith("2099-01-01T00:00")
    assert (ruled["auto_stop_idle_minutes"], ruled["auto_stop_when_exits"]) == (30, None)
    page.click("#autostop-submit")  # saved again unchanged: the stop time is not checked again
    expect(page.locator("#autostop-error")).to_have_count(0)

    # In Chinese.
    page.click("a[data-lang=zh]")
    expect(page.locator("#autostop")).to_have_text("自动关机")
    expect(page.locator("#autostop-max")).to_have_text("关闭")
    page.click("#nav-notifications")
    expect(page.locator("h1")).to_have_text("消息通知")
    expect(page.locator("#notifications tr.note").first).to_contain_text("自动关机")
    context.close()

    console.lea.delete(f"/instances/{instance_id}").raise_for_status()
    wait_status(console.lea, instance_id, "released")


def test_the_create_form_sets_a_stop_time_and_stop_on_exit(console, browser):
    context, page = sign_in(browser, console.url, "lea")
    page.click("nav >> text=Rent a GPU")
    page.select_option("#gpu_count", "0")
    page.select_option("#image", "debian-12")
    page.fill("#name", "timed")
    page.fill("#auto_stop_at", "2020-01-01T08:00+08:00")
    page.click("#create-submit")
    expect(page.locator("#create-error")).to_contain_text("auto_stop_at")  # in the past: refused, nothing made
    assert [i for i in console.lea.get("/instances").json() if i["name"] == "timed"] == []
    page.select_option("#gpu_count", "0")
    page.select_option("#image", "debian-12")
    page.fill("#auto_stop_at", "2099-01-01T08:00+08:00")
    page.check("#auto_stop_on_exit")
    page.select_option("#auto_stop_gpu_idle", "30")
    page.fill("#auto_stop_gpu_idle_percent", "12")
    page.click("#create-submit")
    expect(page).to_have_url(re.compile(r"/instances\?created="))
    made = next(i for i in console.lea.get("/instances").json() if i["name"] == "timed")
    assert made["auto_stop_on_exit"] is True and made["auto_stop_at"].startswith("2099-01-01T00:00")
    assert (made["auto_stop_gpu_idle_minutes"], made["auto_stop_gpu_idle_percent"]) == (30, 12)

    # The GPU-idle threshold on the instance page: shown, changed, and refused outside 0-100.
    page.goto(f"/instances/{made['id']}")
    expect(page.locator("#auto_stop_gpu_idle_percent")).to_have_value("12")
    page.fill("#auto_stop_gpu_idle_percent", "20")
    page.click("#autostop-submit")
    expect(page.locator("#auto_stop_gpu_idle_percent")).to_have_value("20")
    assert console.lea.get(f"/instances/{made['id']}").json()["auto_stop_gpu_idle_percent"] == 20
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    page.goto(page.request.post(f"/instances/{made['id']}/autostop", max_redirects=0, form={
        "csrf": csrf, "auto_stop_gpu_idle": "30", "auto_stop_gpu_idle_percent": "150"}).headers["location"])
    expect(page.locator("#autostop-error")).to_contain_text("GPU idle threshold: a whole number from 0 to 100")
    assert console.lea.get(f"/instances/{made['id']}").json()["auto_stop_gpu_idle_percent"] == 20
    context.close()
    console.lea.delete(f"/instances/{made['id']}").raise_for_status()
