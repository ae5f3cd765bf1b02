"""What an instance serves cannot act as the people who open it, in Debian's Chromium.

Alice serves a hostile page from her instance, on a port and through a share link. Bob,
signed in to the console, opens her share link; an admin, signed in, opens her port from
the console. In neither case can her page read their console (its CSRF token), post a
console form as them, or replace their console cookie, whatever it tries: it runs on her
instance's own host, which carries no platform cookie.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.e2e.browser import CHROMIUM, shot, sign_in
from tests.harness import Server, wait_status

playwright_sync = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect  # noqa: E402

IMAGE = "pytorch-2.13-cpu"
PORT = 8000
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHs6fYpjT3qGqH8q4KBxXbmQm3g9pXb6OqFtYtJvCJ2e alice@evil"

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600),
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")]

# Served by alice's instance: a page that tries, from the browser it is opened in, to read
# the console, to overwrite the console's cookie, and (on a click) to post a console form.
HOSTILE = r'''
import http.server, sys
CONSOLE = sys.argv[1]
PAGE = """<!doctype html><title>cat pictures</title><body>
<form id="steal" method="post" action="%(console)s/keys">
<input name="name" value="alice-was-here"><input name="public_key" value="%(key)s">
<input name="csrf" value="guess"><button id="post">post</button></form>
<script>
(async () => {
  const result = {};
  try {
    const page = await (await fetch("%(console)s/keys", {credentials: "include"})).text();
    result.read = /name="csrf" value="[^"]+"/.test(page) ? "csrf token read" : "read, no token";
  } catch (e) { result.read = "blocked"; }
  try {
    document.cookie = "dockyard_session=tossed; domain=localhost; path=/";
    document.cookie = "dockyard_session=tossed; path=/";
    result.cookie = "written";
  } catch (e) { result.cookie = "refused"; }
  document.body.setAttribute("data-result", JSON.stringify(result));
})();
</script></body>"""
class Hostile(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (PAGE % {"console": CONSOLE, "key": sys.argv[2]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Set-Cookie", "dockyard_session=evil; Domain=localhost; Path=/")
        self.send_header("Set-Cookie", "dockyard_session=evil2; Path=/")
        self.send_header("Set-Cookie", "dockyard_instance=evil; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("", PORT_NUMBER), Hostile).serve_forever()
'''.replace("PORT_NUMBER", str(PORT))


@pytest.fixture(scope="module")
def world(docker_client, pytorch_image):
    srv = Server().start()
    srv.add_user("ops", admin=True)
    srv.alice = srv.add_user("alice")
    srv.bob = srv.add_user("bob")
    created = srv.alice.post("/instances", json={"image": IMAGE, "gpu_count": 1, "name": "cats"}).json()
    wait_status(srv.alice, created["id"], "running", timeout=180)
    key = srv.instance_id = created["id"]
    srv.alice.post(f"/instances/{key}/exec", json={"command": [
        "sh", "-c", f"cat > /root/hostile.py <<'EOF'\n{HOSTILE}\nEOF\n"
                    f"nohup python /root/hostile.py {srv.url} '{KEY}' >/root/hostile.log 2>&1 &"]}).raise_for_status()
    srv.alice.post(f"/instances/{key}/ports", json={"port": PORT}).raise_for_status()
    with srv.instance_client(key, srv.tokens["alice"]) as own:
        for _ in range(60):
            if own.get(f"/instances/{key}/ports/{PORT}/").status_code == 200:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the hostile page did not come up")
    srv.share = srv.alice.post(f"/instances/{key}/ports/{PORT}/share").json()["url"]
    yield srv
    srv.close()


def _console_cookie(context, url: str) -> list[tuple[str, str]]:
    return [(c["name"], c["value"]) for c in context.cookies(url) if c["name"] == "dockyard_session"]


def _attack(world, context, page, victim: str) -> None:
    """Run alice's page in `page` (loaded), then check that nothing reached the console."""
    before = _console_cookie(context, world.url)
    page.wait_for_selector("body[data-result]", timeout=30_000)
    result = json.loads(page.locator("body").get_attribute("data-result"))
    assert result["read"] == "blocked", result  # the console's page (and token) cannot be read
    # Whatever cookies the page and its host tried to set, the console's is the one it was.
    assert _console_cookie(context, world.url) == before and len(before) == 1
    with page.expect_navigation():
        page.click("#post")
    assert page.url == f"{world.url}/keys"
    assert "sign in first" in page.content()  # the post came without the session
    assert world.client(world.tokens[victim]).get("/keys").json() == []
    console = context.new_page()
    console.goto(world.url + "/instances")  # still signed in, as themselves
    expect(console.locator("header")).to_contain_text(victim)
    console.close()


def test_a_share_link_cannot_act_as_the_signed_in_visitor(world, browser):
    context, page = sign_in(browser, world.url, "bob")
    answer = page.goto(world.share)
    assert answer.status == 200 and page.url.startswith(world.instance_url(world.instance_id) + "/shared/")
    assert answer.headers["content-security-policy"].startswith("sandbox")
    shot(page, "hostile-share-link")
    _attack(world, context, page, "bob")
    # Bob has no way into alice's port or JupyterLab.
    mine = context.new_page()
    assert mine.goto(f"{world.url}/instances/{world.instance_id}/ports/{PORT}/").status == 404
    assert mine.goto(f"{world.url}/instances/{world.instance_id}/jupyter/lab").status == 404
    context.close()


def test_an_admin_who_opens_a_users_port_lends_it_no_admin_rights(world, browser):
    context, page = sign_in(browser, world.url, "ops")
    answer = page.goto(f"{world.url}/instances/{world.instance_id}/ports/{PORT}/")
    assert answer.status == 200
    assert page.url == f"{world.instance_url(world.instance_id)}/instances/{world.instance_id}/ports/{PORT}/"
    _attack(world, context, page, "ops")
    # The admin's cookie on alice's host is for that host alone.
    on_her_host = {c["name"]: c for c in context.cookies(world.instance_url(world.instance_id))}
    ours = on_her_host["dockyard_instance"]
    assert ours["domain"] == f"{world.instance_id}.localhost"  # host-only: no leading dot, no parent
    assert ours["httpOnly"] and ours["sameSite"] == "Lax" and ours["value"] != "evil"
    console_session = _console_cookie(context, world.url)[0][1]
    assert all(c["value"] != console_session for c in on_her_host.values())
    events = [e["cause"] for e in world.alice.get(f"/instances/{world.instance_id}/events").json()]
    assert f"admin ops opened port {PORT}" in events
    context.close()


def test_the_console_forbids_framing_sniffing_and_foreign_scripts(world, browser):
    context = browser.new_context(base_url=world.url)
    page = context.new_page()
    headers = page.goto("/login").headers
    assert "frame-ancestors 'self'" in headers["content-security-policy"]
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    # The console still works under its own policy (its scripts run: the page has its data).
    assert page.evaluate("typeof window.DOCKYARD.strings") == "object"
    context.close()
