"""JupyterLab and service ports through the platform's authenticated reverse proxy, on the
instance's own host (`<id>.localhost`), never on the console's."""

import json
import re
import time
import uuid

import httpx
import pytest
from websockets.sync.client import connect

from tests.harness import Server, wait_status

IMAGE = "pytorch-2.13-cpu"


@pytest.fixture(scope="module")
def lab(docker_client, pytorch_image):
    srv = Server().start()
    srv.admin = srv.add_user("ops", admin=True)
    srv.api = srv.add_user("jo")
    srv.other = srv.add_user("kim")
    created = srv.api.post("/instances", json={"image": IMAGE, "gpu_count": 1, "name": "nb"}).json()
    wait_status(srv.api, created["id"], "running", timeout=120)
    srv.instance = created
    srv.http = srv.instance_client(created["id"], srv.tokens["jo"])
    srv.origin = srv.instance_url(created["id"])
    base = f"/instances/{created['id']}/jupyter"
    for _ in range(120):  # JupyterLab takes a few seconds to come up
        if srv.http.get(f"{base}/api/status").status_code == 200:
            break
        time.sleep(0.5)
    yield srv
    srv.close()


def test_a_kernel_evaluates_through_the_proxy(lab):
    base = f"/instances/{lab.instance['id']}/jupyter"
    kernel = lab.http.post(f"{base}/api/kernels", json={"name": "python3"})
    assert kernel.status_code == 201, kernel.text
    ws_url = lab.origin.replace("http", "ws") + f"{base}/api/kernels/{kernel.json()['id']}/channels"
    session = uuid.uuid4().hex
    with connect(ws_url, additional_headers={"Authorization": f"Bearer {lab.tokens['jo']}"}, open_timeout=20) as ws:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "jo", "session": session, "msg_type": "execute_request",
                       "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": "1+1", "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        deadline = time.monotonic() + 60
        result = None
        while time.monotonic() < deadline and result is None:
            message = json.loads(ws.recv(timeout=30))
            if message.get("msg_type") == "execute_result" and message["parent_header"].get("msg_id") == msg_id:
                result = message["content"]["data"]["text/plain"]
    assert result == "2"
    assert lab.http.delete(f"{base}/api/kernels/{kernel.json()['id']}").status_code == 204
    # The access path records activity (the auto-stop rules will read it).
    assert lab.api.get(f"/instances/{lab.instance['id']}").json()["last_jupyter_at"] is not None


def test_only_the_owner_gets_through(lab):
    base = f"/instances/{lab.instance['id']}/jupyter/api/status"
    assert httpx.get(lab.origin + base).status_code == 401
    other = httpx.get(lab.origin + base, headers={"Authorization": f"Bearer {lab.tokens['kim']}"})
    assert other.status_code == 404
    ws_url = lab.origin.replace("http", "ws") + f"/instances/{lab.instance['id']}/jupyter/api/events/subscribe"
    with pytest.raises(Exception):
        with connect(ws_url, additional_headers={"Authorization": f"Bearer {lab.tokens['kim']}"}) as ws:
            ws.recv(timeout=5)
    # A page of another origin cannot act with the owner's credentials (JupyterLab trusts us).
    forged = lab.http.post(f"/instances/{lab.instance['id']}/jupyter/api/kernels", json={"name": "python3"},
                           headers={"Origin": "http://evil.localhost"})
    assert forged.status_code == 403
    # Another host never serves this instance, nor the console.
    elsewhere = httpx.get(f"http://0123abcd.localhost:{lab.port}{base}",
                          headers={"Authorization": f"Bearer {lab.tokens['jo']}"})
    assert elsewhere.status_code == 404
    assert httpx.get(lab.origin + "/instances").status_code == 404
    assert httpx.get(lab.origin + "/api/v1/instances", headers={"Authorization": f"Bearer {lab.tokens['jo']}"}
                     ).status_code == 404
    # An admin gets through, and it is written down.
    admin = httpx.get(lab.origin + base, headers={"Authorization": f"Bearer {lab.tokens['ops']}"})
    assert admin.status_code == 200
    causes = [e["cause"] for e in lab.api.get(f"/instances/{lab.instance['id']}/events").json()]
    assert "admin ops opened JupyterLab" in causes


def test_the_console_origin_redirects_and_never_serves_an_instance(lab):
    key, jo = lab.instance["id"], {"Authorization": f"Bearer {lab.tokens['jo']}"}
    moved = httpx.get(f"{lab.url}/instances/nb/jupyter/api/status?x=1", headers=jo)
    assert moved.status_code == 307 and moved.headers["location"] == f"{lab.origin}/instances/{key}/jupyter/api/status?x=1"
    assert httpx.get(f"{lab.url}/instances/{key}/jupyter/lab", headers={
        "Authorization": f"Bearer {lab.tokens['kim']}"}).status_code == 404
    assert httpx.get(f"{lab.url}/instances/{key}/jupyter/lab").status_code == 401
    posted = httpx.post(f"{lab.url}/instances/{key}/jupyter/api/kernels", headers=jo, json={"name": "python3"})
    assert posted.status_code == 421 and "own host" in posted.json()["detail"]


def test_the_cli_link_opens_the_instance_host_only_and_the_token_stays_inside(lab):
    link = lab.cli("jupyter", "nb", token_of="jo", check=True).stdout.strip()
    assert link.startswith(f"{lab.origin}/_dockyard/open?ticket=")
    browser = httpx.Client(follow_redirects=False, timeout=30)
    landed = browser.get(link)
    assert landed.status_code == 303 and landed.headers["location"] == f"/instances/{lab.instance['id']}/jupyter/lab"
    set_cookie = landed.headers["set-cookie"].lower()
    assert set_cookie.startswith("dockyard_instance=") and "httponly" in set_cookie and "samesite=lax" in set_cookie
    assert "domain" not in set_cookie  # this host's only
    page = browser.get(lab.origin + landed.headers["location"])
    assert page.status_code == 200 and "JupyterLab" in page.text
    # The instance's cookie is no console session, and opens no other host.
    session = landed.cookies.get("dockyard_instance")
    assert httpx.get(f"{lab.url}/api/v1/instances", cookies={"dockyard_session": session}).status_code == 401
    assert httpx.get(f"{lab.url}/instances", cookies={"dockyard_session": session}).status_code == 303
    token = lab.api.post(f"/instances/{lab.instance['id']}/exec",
                         json={"command": ["sh", "-c", "printf %s $DOCKYARD_JUPYTER_TOKEN"]}).json()["output"]
    assert token and token not in page.text and token not in link
    assert httpx.get(link).status_code == 401  # the link works once


def test_service_ports_private_shared_and_revoked(lab):
    api, key = lab.api, lab.instance["id"]
    api.post(f"/instances/{key}/exec", json={"command": [
        "sh", "-c", "mkdir -p /root/tb && echo scalars > /root/tb/index.html && "
                    "nohup python -m http.server 6006 --directory /root/tb >/dev/null 2>&1 &"]})
    for bad, words in ((22, "reserved for SSH"), (8888, "reserved for JupyterLab"), (70000, "outside 1-65535"),
                       (0, "outside 1-65535")):
        refused = api.post(f"/instances/{key}/ports", json={"port": bad})
        assert refused.status_code == 400 and words in refused.json()["detail"]
    assert lab.http.get(f"/instances/{key}/ports/6006/").status_code == 404  # not exposed yet
    added = lab.cli("ports", "add", "nb", token_of="jo", check=True).stdout
    assert f"{lab.origin}/instances/{key}/ports/6006/" in added
    for _ in range(40):
        page = lab.http.get(f"/instances/{key}/ports/6006/")
        if page.status_code == 200:
            break
        time.sleep(0.5)
    assert page.text == "scalars\n"
    other = httpx.get(f"{lab.origin}/instances/{key}/ports/6006/", headers={"Authorization": f"Bearer {lab.tokens['kim']}"})
    assert other.status_code == 404
    assert httpx.get(f"{lab.origin}/instances/{key}/ports/6006/").status_code == 401

    link = lab.cli("ports", "share", "nb", "6006", token_of="jo", check=True).stdout.strip()
    assert link.startswith(f"{lab.origin}/shared/")
    shared = httpx.get(link)
    assert shared.text == "scalars\n"  # anyone with the link
    assert shared.headers["content-security-policy"].startswith("sandbox ")
    assert "allow-same-origin" not in shared.headers["content-security-policy"]
    # The console's host sends a share link on to the instance's.
    old = httpx.get(link.replace(lab.origin, lab.url))
    assert old.status_code == 307 and old.headers["location"] == link
    lab.cli("ports", "share", "nb", "6006", "--revoke", token_of="jo", check=True)
    assert httpx.get(link).status_code == 404


COOKIE_SERVER = """
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (self.headers.get("Cookie") or "-").encode()
        self.send_response(200)
        self.send_header("Set-Cookie", "dockyard_session=evil; Path=/")
        self.send_header("Set-Cookie", "dockyard_instance=evil; Path=/")
        self.send_header("Set-Cookie", "wide=1; Domain=localhost; Path=/")
        self.send_header("Set-Cookie", "theirs=1; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("", 7000), H).serve_forever()
"""


def test_an_instance_sets_no_cookie_of_ours_and_gets_none(lab):
    key = lab.instance["id"]
    lab.api.post(f"/instances/{key}/exec", json={"command": [
        "sh", "-c", f"cat > /root/cookies.py <<'EOF'\n{COOKIE_SERVER}\nEOF\n"
                    "nohup python /root/cookies.py >/dev/null 2>&1 &"]})
    lab.api.post(f"/instances/{key}/ports", json={"port": 7000}).raise_for_status()
    for _ in range(40):
        page = lab.http.get(f"/instances/{key}/ports/7000/", headers={
            "Cookie": "dockyard_session=console-secret; dockyard_instance=host-secret; theirs=1"})
        if page.status_code == 200:
            break
        time.sleep(0.5)
    assert page.text == "theirs=1"  # our cookies never reach the instance
    assert page.headers.get_list("set-cookie") == ["theirs=1; Path=/"]


def test_the_console_opens_the_instance_host_with_a_ticket_and_signing_out_closes_it(lab):
    key = lab.instance["id"]
    browser = httpx.Client(base_url=lab.url, timeout=30)
    form = browser.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    assert browser.post("/login", data={"user": "jo", "password": "correct-horse", "csrf": csrf}).status_code == 303
    opened = browser.get(f"/instances/{key}/jupyter/api/status", follow_redirects=True)
    assert opened.status_code == 200 and str(opened.url) == f"{lab.origin}/instances/{key}/jupyter/api/status"
    first, second = opened.history
    assert first.status_code == 303 and first.headers["location"].startswith(f"{lab.origin}/_dockyard/open?ticket=")
    assert first.headers["referrer-policy"] == "no-referrer"
    ticket_url = first.headers["location"]
    # The ticket is for this instance's host only, and once.
    other_host = ticket_url.replace(lab.origin, f"http://0123abcd.localhost:{lab.port}")
    assert httpx.get(other_host).status_code == 401
    assert httpx.get(ticket_url).status_code == 401
    # Back to a spent ticket with the host's cookie: on to the page.
    again = browser.get(ticket_url)
    assert again.status_code == 303 and again.headers["location"] == f"/instances/{key}/jupyter/api/status"
    page = browser.get("/instances")
    token = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
    assert browser.post("/logout", data={"csrf": token}).status_code == 303
    assert browser.get(f"{lab.origin}/instances/{key}/jupyter/api/status").status_code == 401


PATH_SERVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("", int(sys.argv[1])), H).serve_forever()
"""


def test_a_port_that_keeps_its_path_gets_the_whole_path_own_and_shared(lab):
    api, key = lab.api, lab.instance["id"]
    api.post(f"/instances/{key}/exec", json={"command": [
        "sh", "-c", f"printf '%s' '{PATH_SERVER}' > /tmp/paths.py && "
                    "(nohup python /tmp/paths.py 7100 >/dev/null 2>&1 &) && (nohup python /tmp/paths.py 7101 >/dev/null 2>&1 &)"]})
    kept = api.post(f"/instances/{key}/ports", json={"port": 7100, "keep_path": True}).json()
    assert kept["keep_path"] and kept["base_path"] == f"/instances/{key}/ports/7100/"
    assert kept["url"] == f"{lab.origin}/instances/{key}/ports/7100/"
    assert not api.post(f"/instances/{key}/ports", json={"port": 7101}).json()["keep_path"]
    pages = {}
    for port in (7100, 7101):  # both servers up: each starts on its own under load
        for _ in range(40):
            pages[port] = lab.http.get(f"/instances/{key}/ports/{port}/a/b?x=1")
            if pages[port].status_code == 200:
                break
            time.sleep(0.5)
    assert pages[7100].text == f"/instances/{key}/ports/7100/a/b?x=1"
    assert pages[7101].text == "/a/b?x=1"  # the prefix stripped
    by_name = lab.http.get("/instances/nb/ports/7100/a")
    assert by_name.status_code in (302, 303, 307) and by_name.headers["location"].endswith(
        f"/instances/{key}/ports/7100/a")
    link = lab.cli("ports", "share", "nb", "7100", token_of="jo", check=True).stdout.strip()
    assert httpx.get(link + "c").text == f"/instances/{key}/ports/7100/c"
    for port in (7100, 7101):
        api.delete(f"/instances/{key}/ports/{port}").raise_for_status()


def test_jupyterlab_extensions_resource_usage_and_the_tensorboard_tile(lab):
    base = f"/instances/{lab.instance['id']}/jupyter"
    usage = lab.http.get(f"{base}/api/metrics/v1")  # jupyter-resource-usage: the status bar's numbers
    assert usage.status_code == 200 and usage.json()["rss"] > 0
    servers = lab.http.get(f"{base}/server-proxy/servers-info").json()["server_processes"]
    assert [s["launcher_entry"]["title"] for s in servers if s["name"] == "tensorboard"] == ["TensorBoard"]
    # The tile's URL: jupyter-server-proxy starts TensorBoard on the first request.
    for _ in range(30):
        page = lab.http.get(f"{base}/tensorboard/", timeout=90)
        if page.status_code == 200:
            break
        time.sleep(1)
    assert page.status_code == 200 and "tensorboard" in page.text.lower()
    assert lab.http.get(f"{base}/tensorboard/data/plugins_listing").status_code == 200
