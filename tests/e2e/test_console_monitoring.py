"""The instance page's monitoring charts and advisor, in Debian's headless Chromium against
a real `dockyard serve` (a sample every second) and the real Docker engine. Screenshot:
test-artifacts/console/monitoring.png (`python -m tests.e2e.test_console` copies it to docs)."""

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
def monitored(docker_client):
    # A small memory share for GPU-less instances, so that nearly filling it is cheap.
    srv = Server(metrics_interval_s="1", metrics_disk_interval_s="2", no_gpu_memory_gb="0.25").start()
    admin = srv.add_user("ops", admin=True)
    admin.post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    srv.mia = srv.add_user("mia")
    srv.add_user("eve")
    yield srv
    srv.close()


def create(api, **body) -> dict:
    response = api.post("/instances", json={"image": "debian-12", **body})
    assert response.status_code == 201, response.text
    return wait_status(api, response.json()["id"], "running")


def line_points(page) -> int:
    return page.evaluate("""() => Math.max(0, ...[...document.querySelectorAll('#monitoring svg polyline.line')]
        .map((line) => line.getAttribute('points').trim().split(/\\s+/).length))""")


def test_charts_live_and_advisor_findings(monitored, browser):
    trainer = create(monitored.mia, name="trainer", gpu_model="A100-80GB", gpu_count=1)
    # Busy and near its memory limit (tmpfs pages count against it and cannot be dropped).
    notebook = create(monitored.mia, name="notebook", gpu_count=0,
                      command="dd if=/dev/zero of=/dev/shm/fill bs=1M count=236 2>/dev/null; while :; do :; done")
    context, page = sign_in(browser, monitored.url, "mia")

    page.goto(f"/instances/{trainer['id']}")
    expect(page.locator("#monitoring svg polyline.line").first).to_be_attached(timeout=30_000)
    expect(page.locator("#mon-charts .chart")).to_have_count(2)  # CPU and memory; no GPU data to chart
    expect(page.locator("#mon-notes")).to_contain_text("GPU 0 · A100-80GB: simulated, no data")
    expect(page.locator("#advisor")).to_contain_text("No findings")
    # Live: the line grows while the page stays (a reload would drop the marker).
    page.evaluate("window.__sameDocument = true")
    before = line_points(page)
    page.wait_for_function(f"""() => Math.max(0, ...[...document.querySelectorAll('#monitoring svg polyline.line')]
        .map((line) => line.getAttribute('points').trim().split(/\\s+/).length)) > {before}""", timeout=20_000)
    assert page.evaluate("window.__sameDocument") is True

    page.goto(f"/instances/{notebook['id']}")
    finding = page.locator("#advisor .finding[data-rule=memory_high]")
    expect(finding).to_contain_text("OOM", timeout=30_000)
    expect(finding.locator(".badge")).to_have_text("warning")
    expect(page.locator("#mon-notes")).to_contain_text("No GPU")
    expect(page.locator("#mon-notes")).to_contain_text(re.compile(r"Data disk \(/root/data\): \d+ MiB / \d+\.\d GiB"),
                                                       timeout=20_000)
    page.wait_for_function("() => (window.DOCKYARD.metrics || {samples: []}).samples.length >= 20", timeout=40_000)
    cpu = page.locator(".chart", has_text="CPU").locator(".chart-latest").inner_text()
    assert int(cpu.rstrip("%")) > 50, cpu
    shot(page, "monitoring")

    page.goto(f"/lang/zh?next=/instances/{notebook['id']}")
    expect(page.locator("h2", has_text="监控")).to_be_visible()
    expect(page.locator("#advisor .finding[data-rule=memory_high]")).to_contain_text("内存已用到", timeout=30_000)
    context.close()

    # Someone else's instance: its page and its data are 404.
    other, eve = sign_in(browser, monitored.url, "eve")
    assert eve.request.get(f"/console/instances/{notebook['id']}/metrics").status == 404
    assert eve.goto(f"/instances/{notebook['id']}").status == 404
    other.close()
