"""The web console end to end, in Debian's headless Chromium driven by Playwright, against a
real `dockyard serve` with simulated GPUs and the real Docker engine.

One story, in order: sign in, add an SSH key, look at the market, rent a CPU PyTorch
instance, watch it reach running live (no reload), run a cell in JupyterLab through the
console, copy the SSH command and use it with OpenSSH, stop the instance, see the
statement change, switch to Chinese; another user's session sees nothing of it.
Screenshots of the main pages go to test-artifacts/console/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.browser import CHROMIUM, PASSWORD, SHOTS, shot, sign_in
from tests.harness import REPO, Server

playwright_sync = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect  # noqa: E402

IMAGE = "pytorch-2.13-cpu"

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600),
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")]


@pytest.fixture(scope="module")
def console(docker_client, pytorch_image):
    srv = Server(settle_interval_s="1", settle_lag_s="0.5", login_failures_per_account="5").start()
    srv.admin = srv.add_user("ops", admin=True)
    srv.mia = srv.add_user("mia")
    srv.add_user("eve")
    # A price high enough to show in seconds, and money to pay it.
    srv.admin.post("/billing/prices", json={"kind": "gpu", "model": "A100-80GB", "price": "36"}).raise_for_status()
    srv.admin.post("/billing/prices", json={"kind": "no_gpu", "price": "3.6"}).raise_for_status()
    srv.admin.post("/billing/credit", json={"user": "mia", "amount": "1000"}).raise_for_status()
    yield srv
    srv.close()


def ssh_parts(command: str) -> tuple[str, str]:
    match = re.fullmatch(r"ssh -p (\d+) (root@\S+)", command)
    assert match, command
    return match.group(1), match.group(2)


def run_ssh(key: Path, command: str, remote: str) -> subprocess.CompletedProcess:
    port, target = ssh_parts(command)
    return subprocess.run(["ssh", "-i", str(key), "-p", port, "-o", "StrictHostKeyChecking=no", "-o",
                           "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                           target, remote], capture_output=True, text=True, timeout=60)


def test_sign_in_is_rate_limited_and_mutations_need_the_csrf_token(console):
    http = httpx.Client(base_url=console.url, follow_redirects=False)
    page = http.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    codes = [http.post("/login", data={"user": "ghost", "password": "wrong-one", "csrf": token}).status_code
             for _ in range(6)]
    assert codes == [401] * 5 + [429]
    # The limit is per user and address: the right password of another user still works.
    good = http.post("/login", data={"user": "mia", "password": PASSWORD, "csrf": token})
    assert good.status_code == 303 and "HttpOnly" in good.headers["set-cookie"]
    assert "samesite=lax" in good.headers["set-cookie"].lower()
    no_token = http.post("/keys", data={"name": "k", "public_key": "x"})
    assert no_token.status_code == 403
    assert http.post("/console/instances/x/stop", headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert httpx.post(console.url + "/login", data={"user": "mia", "password": PASSWORD}).status_code == 403


def test_the_console_end_to_end(console, browser, tmp_path):
    context, page = sign_in(browser, console.url, "mia")
    shot(page, "instances-empty")

    # SSH key first: instances get their owner's keys at start.
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    page.click("text=SSH keys")
    page.fill("#key-form input[name=name]", "laptop")
    page.fill("#key-form textarea[name=public_key]", key.with_suffix(".pub").read_text())
    page.click("#key-form button")
    expect(page.locator("#keys")).to_contain_text("laptop")
    expect(page.locator("#keys")).to_contain_text("SHA256:")
    shot(page, "keys")

    page.click("text=Billing")
    expect(page.locator("#statement-empty")).to_be_visible()
    expect(page.locator("#balance")).to_contain_text("1000.00 CNY")

    # The market: per node and model, free/total, driver, CUDA, price.
    page.click("nav >> text=GPU market")
    table = page.locator("#market-table")
    expect(table).to_contain_text("A100-80GB")
    expect(table).to_contain_text("RTX-4090")
    expect(table).to_contain_text("4 / 4")
    expect(table).to_contain_text("36.00 CNY")
    shot(page, "market")

    # Create: the image picker lists what the node's driver runs; the price shows first.
    page.locator(".gpu[data-model='A100-80GB'] >> text=Rent").click()
    expect(page).to_have_url(re.compile(r"/create\?model=A100-80GB"))
    page.select_option("#gpu_count", "1")
    page.select_option("#image", IMAGE)
    page.fill("#name", "lab")
    expect(page.locator("#create-keys")).to_contain_text("laptop")  # the keys it will get
    expect(page.locator("#price")).to_contain_text("36.00 CNY")
    page.select_option("#gpu_count", "2")
    expect(page.locator("#price")).to_contain_text("72.00 CNY")
    page.select_option("#gpu_count", "1")
    shot(page, "create")
    page.click("#create-submit")
    expect(page).to_have_url(re.compile(r"/instances\?created="))
    row = page.locator("tr.instance", has_text="lab")
    instance_id = row.get_attribute("data-id")

    # Running, live: the page is never reloaded (the marker would vanish).
    page.evaluate("window.__sameDocument = true")
    expect(row.locator(".badge.status")).to_have_text("running", timeout=120_000)
    assert page.evaluate("window.__sameDocument") is True
    expect(row.locator(".gpus")).to_contain_text("1 × A100-80GB")
    expect(row.locator(".uptime")).not_to_have_text("—")
    shot(page, "instances")

    # JupyterLab through the console: wait until it answers, then open it from the row. It
    # opens on the instance's own host (a ticket from the console, traded for that host's
    # cookie), never on the console's.
    with console.instance_client(instance_id, console.tokens["mia"]) as api:
        for _ in range(120):
            if api.get(f"/instances/{instance_id}/jupyter/api/status").status_code == 200:
                break
            time.sleep(0.5)
    with context.expect_page() as opened:
        row.locator("text=JupyterLab").click()
    lab = opened.value
    lab.wait_for_load_state()
    expect(lab).to_have_url(re.compile(rf"^{re.escape(console.instance_url(instance_id))}/instances/{instance_id}/jupyter/lab"))
    assert "dockyard_instance" in [c["name"] for c in context.cookies(console.instance_url(instance_id))]
    lab.locator(".jp-LauncherCard[data-category='Notebook']").first.click(timeout=90_000)
    expect(lab.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle"))).to_be_visible(timeout=90_000)
    cell = lab.locator(".jp-Notebook .jp-Cell .cm-content").first
    cell.click(timeout=60_000)
    cell.press_sequentially("print(6*7)", delay=20)
    expect(cell).to_have_text("print(6*7)")
    cell.press("Shift+Enter")
    expect(lab.locator(".jp-OutputArea-output").first).to_have_text("42", timeout=90_000)
    lab.screenshot(path=str(SHOTS / "jupyterlab.png"))
    lab.close()

    # Copy the SSH command and use it with the real OpenSSH client.
    row.locator("[data-action=copy-ssh]").click()
    expect(page.locator("#toast")).to_contain_text("ssh -p ")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == page.evaluate("window.DOCKYARD.lastCopied")
    for _ in range(60):
        result = run_ssh(key, copied, "echo ok")
        if result.returncode == 0:
            break
        time.sleep(0.5)
    assert result.stdout.strip() == "ok", result.stderr

    # The detail page: events, logs, ports.
    page.click(f"a[href='/instances/{instance_id}']")
    expect(page.locator("#events")).to_contain_text("created by mia")
    expect(page.locator("#events")).to_contain_text("running")
    shot(page, "instance")
    page.click("text=All instances")

    # Stop, live again; then the settled usage is on the statement.
    row = page.locator("tr.instance", has_text="lab")
    row.locator("[data-action=stop]").click()
    expect(row.locator(".badge.status")).to_have_text("stopped", timeout=60_000)
    expect(row.locator("[data-action=start]")).to_be_enabled()
    page.click("text=Billing")
    # The metering loop settles every second, half a second behind, in windows aligned to
    # the minute: a run that crossed a minute just after it began shows a first window worth
    # 0.00 before its stop is settled, so wait for the closed run, not for the first row.
    for _ in range(40):
        total = page.locator("#total")
        if total.count() and total.inner_text() != "0.00 CNY":
            break
        time.sleep(0.5)
        page.reload()
    statement = page.locator("#statement")
    expect(statement).to_contain_text("lab")
    expect(statement).to_contain_text("usage")
    total = page.locator("#total").inner_text()
    assert re.match(r"\d+\.\d\d CNY", total) and total != "0.00 CNY", total
    assert page.request.get("/billing/statement.csv").text().startswith("day,instance_id,instance,kind")
    shot(page, "billing")

    # Chinese, by the switch in the header; it sticks (a cookie).
    page.click("a[data-lang=zh]")
    expect(page.locator("h1")).to_have_text("费用中心")
    page.click("nav >> text=容器实例")
    expect(page.locator("h1")).to_have_text("我的实例")
    expect(page.locator("tr.instance .badge.status")).to_have_text("已关机")
    shot(page, "instances-zh")

    # Another user's session sees nothing of it, and cannot open it.
    other, eve = sign_in(browser, console.url, "eve")
    expect(eve.locator("body")).not_to_contain_text("lab")
    assert eve.goto(f"/instances/{instance_id}").status == 404
    assert eve.request.get(f"/instances/{instance_id}/jupyter/api/status").status == 404
    forged = eve.evaluate(f"""async () => (await fetch('/console/instances/{instance_id}/start', {{method: 'POST',
        headers: {{'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content}}}})).status""")
    assert forged == 404
    other.close()

    # Release, with confirmation.
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("tr.instance", has_text="lab").locator("[data-action=release]").click()
    expect(page.locator("tr.instance", has_text="lab")).to_have_count(0, timeout=60_000)
    context.close()


def test_sign_in_page_screenshot(console, browser):
    context = browser.new_context(base_url=console.url, viewport={"width": 1360, "height": 760})
    page = context.new_page()
    page.goto("/login")
    expect(page.locator("h1")).to_contain_text("Dockyard")
    shot(page, "signin")
    context.close()


def copy_screenshots_to_docs() -> None:  # pragma: no cover - run by hand: python -m tests.e2e.test_console
    target = REPO / "docs" / "screenshots"
    target.mkdir(parents=True, exist_ok=True)
    for png in SHOTS.glob("*.png"):
        shutil.copy(png, target / png.name)


if __name__ == "__main__":  # pragma: no cover
    copy_screenshots_to_docs()
