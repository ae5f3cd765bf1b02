"""Moving an instance to another node from the console (docs/migrate.md): the button on
its page asks for the node, the operations panel shows the copy's progress to the end,
and the instance runs on the other engine (tests/engines.py). Set up as
tests/e2e/test_console.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.browser import CHROMIUM, shot, sign_in
from tests.engines import MIGRATION, clean_engine, engine, far_node_config, remove_images
from tests.harness import BASE_IMAGE, Server, wait_status

playwright_sync = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600),
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")]


@pytest.fixture(scope="module")
def console(docker_client):
    remote = engine(MIGRATION, [BASE_IMAGE])
    srv = Server(simulated_gpus="A100-80GB:1")
    (srv.home / "config.toml").write_text(far_node_config(MIGRATION))
    srv.start()
    srv.admin = srv.add_user("ops", admin=True)
    srv.admin.post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    srv.mia = srv.add_user("mia")
    yield srv
    deployment = srv.deployment
    srv.close()
    clean_engine(remote)
    remove_images(remote, deployment)


def test_moving_from_the_console_shows_progress_then_it_runs_on_the_other_node(console, browser):
    api = console.mia
    made = api.post("/instances", json={"image": "debian-12", "gpu_model": "A100-80GB", "gpu_count": 1,
                                        "name": "nomad"}).json()
    assert wait_status(api, made["id"], "running")["node"] == "local"
    api.post(f"/instances/{made['id']}/exec", json={"command": [
        "sh", "-c", "echo hi > /root/hello && head -c 20000000 /dev/urandom > /root/data/blob"]}).raise_for_status()
    api.post(f"/instances/{made['id']}/stop").raise_for_status()
    wait_status(api, made["id"], "stopped")

    context, page = sign_in(browser, console.url, "mia")
    page.goto(f"/instances/{made['id']}")
    page.once("dialog", lambda dialog: dialog.accept("far"))
    page.locator(".detail [data-action=migrate]").click()
    card = page.locator("#operations .op[data-kind=migrate]")
    expect(card).to_contain_text("Move: nomad", timeout=30_000)
    expect(card.locator(".op-phase")).to_have_text("done", timeout=180_000)
    expect(card.locator(".op-percent")).to_have_text("100%")
    shot(page, "instance-migrated")
    moved = wait_status(api, made["id"], "running")
    assert moved["node"] == "far"
    out = api.post(f"/instances/{made['id']}/exec", json={"command": ["sh", "-c", "cat /root/hello; wc -c < /root/data/blob"]})
    assert out.json()["output"] == "hi\n20000000\n"

    # A node that is not there: the server's reason in the toast, nothing moves.
    api.post(f"/instances/{made['id']}/stop").raise_for_status()
    wait_status(api, made["id"], "stopped")
    page.goto(f"/instances/{made['id']}")
    page.once("dialog", lambda dialog: dialog.accept("atlantis"))
    page.locator(".detail [data-action=migrate]").click()
    expect(page.locator("#toast")).to_contain_text("node 'atlantis' not found")
    assert api.get(f"/instances/{made['id']}").json()["node"] == "far"
    context.close()
