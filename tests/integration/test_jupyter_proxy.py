"""JupyterLab and service ports through the platform's authenticated reverse proxy."""

import json
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
    srv.http = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.tokens['jo']}"}, timeout=30)
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
    ws_url = lab.url.replace("http", "ws") + f"{base}/api/kernels/{kernel.json()['id']}/channels"
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
    assert httpx.get(lab.url + base).status_code == 401
    other = httpx.get(lab.url + base, headers={"Authorization": f"Bearer {lab.tokens['kim']}"})
    assert other.status_code == 404
    ws_url = lab.url.replace("http", "ws") + f"/instances/{lab.instance['id']}/jupyter/api/events/subscribe"
    with pytest.raises(Exception):
        with connect(ws_url, additional_headers={"Authorization": f"Bearer {lab.tokens['kim']}"}) as ws:
            ws.recv(timeout=5)
    # An admin gets through, and it is written down.
    admin = httpx.get(lab.url + base, headers={"Authorization": f"Bearer {lab.tokens['ops']}"})
    assert admin.status_code == 200
    causes = [e["cause"] for e in lab.api.get(f"/instances/{lab.instance['id']}/events").json()]
    assert "admin ops opened JupyterLab" in causes


def test_the_cli_link_signs_a_browser_in_and_the_token_stays_inside(lab):
    link = lab.cli("jupyter", "nb", token_of="jo", check=True).stdout.strip()
    assert "/login/link?token=" in link
    browser = httpx.Client(follow_redirects=False, timeout=30)
    landed = browser.get(link)
    assert landed.status_code == 303 and landed.headers["location"] == f"/instances/{lab.instance['id']}/jupyter/lab"
    cookie = landed.cookies.get("dockyard_session")
    assert cookie and "httponly" in landed.headers["set-cookie"].lower()
    page = browser.get(lab.url + landed.headers["location"])
    assert page.status_code == 200 and "JupyterLab" in page.text
    token = lab.api.post(f"/instances/{lab.instance['id']}/exec",
                         json={"command": ["sh", "-c", "printf %s $DOCKYARD_JUPYTER_TOKEN"]}).json()["output"]
    assert token and token not in page.text and token not in link
    assert browser.get(link).status_code == 401  # the link works once


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
    assert f"/instances/{key}/ports/6006/" in added
    for _ in range(40):
        page = lab.http.get(f"/instances/{key}/ports/6006/")
        if page.status_code == 200:
            break
        time.sleep(0.5)
    assert page.text == "scalars\n"
    other = httpx.get(f"{lab.url}/instances/{key}/ports/6006/", headers={"Authorization": f"Bearer {lab.tokens['kim']}"})
    assert other.status_code == 404
    assert httpx.get(f"{lab.url}/instances/{key}/ports/6006/").status_code == 401

    link = lab.cli("ports", "share", "nb", "6006", token_of="jo", check=True).stdout.strip()
    assert httpx.get(link).text == "scalars\n"  # anyone with the link
    lab.cli("ports", "share", "nb", "6006", "--revoke", token_of="jo", check=True)
    assert httpx.get(link).status_code == 404
