"""The auto-stop rules beyond idle and runtime, against a real server and the real Docker
engine (simulated GPUs): a stop time, the start command's exit, a named process's exit,
GPU idle that cannot fire without readings, the warning and keep-running, operator limits,
and Jupyter idle that does not lie (a busy kernel counts, an open tab's polling does not).
One policy minute lasts 2 seconds here (`autostop_minute_s`) and warnings come 2 policy
minutes before a timer's stop."""

import json
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from tests.harness import BASE_IMAGE, Server, wait_status

MINUTE_S = 2
SETTINGS = dict(autostop_interval_s="1", autostop_minute_s=str(MINUTE_S), activity_interval_s="1",
                autostop_warn_minutes="2")


def serve(**settings) -> Server:
    server = Server(**SETTINGS, **settings).start()
    admin = server.add_user("ops", admin=True)
    admin.post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    server.ann = server.add_user("ann")
    return server


@pytest.fixture(scope="module")
def srv(docker_client):
    server = serve()
    yield server
    server.close()


def causes(api, key) -> list[str]:
    return [e["cause"] for e in api.get(f"/instances/{key}/events").json()]


def live(api) -> list[dict]:
    return [i for i in api.get("/instances").json() if i["status"] != "released"]


def soon(seconds: float) -> str:
    return (datetime.now(timezone(timedelta(hours=8))) + timedelta(seconds=seconds)).isoformat()


def create(api, **fields) -> dict:
    made = api.post("/instances", json={"image": "debian-12", "gpu_count": 0, **fields})
    assert made.status_code == 201, made.text
    return made.json()


BAD_CREATES = [
    ({"auto_stop_gpu_idle_percent": 101}, 422, "less than or equal to 100"),
    ({"auto_stop_gpu_idle_percent": -1}, 422, "greater than or equal to 0"),
    ({"auto_stop_gpu_idle_minutes": -5}, 422, "greater than or equal to 1"),
    ({"auto_stop_at": "2020-01-01T08:00+08:00"}, 400, "is in the past"),
    ({"auto_stop_at": "2099-01-01T08:00"}, 400, "no time zone"),
    ({"auto_stop_at": "soon"}, 422, "valid datetime"),
    ({"auto_stop_on_exit": "yes"}, 422, "valid boolean"),
]


@pytest.mark.parametrize("fields, code, word", BAD_CREATES)
def test_bad_rules_are_refused_naming_the_field_and_nothing_is_created(srv, fields, code, word):
    refused = srv.ann.post("/instances", json={"image": "debian-12", "gpu_count": 0, **fields})
    assert refused.status_code == code, refused.text
    assert next(iter(fields)) in refused.json()["detail"] and word in refused.json()["detail"]
    assert live(srv.ann) == []


def test_a_stop_time_stops_the_instance(srv, docker_client):
    made = create(srv.ann, name="timed", auto_stop_at=soon(8))
    wait_status(srv.ann, made["id"], "running", timeout=60)
    past = srv.ann.patch(f"/instances/{made['id']}", json={"auto_stop_at": "2026-01-01T00:00Z"})
    assert past.status_code == 400 and "auto_stop_at" in past.json()["detail"]
    wait_status(srv.ann, made["id"], "stopped", timeout=60)
    assert any(c.startswith("auto-stop: the stop time ") and c.endswith(" UTC came") for c in causes(srv.ann, made["id"]))
    assert len(docker_client.volumes.list(filters={"label": f"dockyard.instance={made['id']}"})) == 1
    srv.ann.delete(f"/instances/{made['id']}").raise_for_status()


def test_the_start_command_exiting_stops_it_and_keeps_the_disks(srv, docker_client):
    out = srv.cli("create", "--image", "debian-12", "--gpus", "1", "--name", "train", "--cmd", "sleep 4",
                  "--stop-on-exit", "--json", token_of="ann", check=True)
    made = json.loads(out.stdout)
    assert made["auto_stop_on_exit"] is True
    wait_status(srv.ann, made["id"], "running", "stopped", timeout=60)
    stopped = wait_status(srv.ann, made["id"], "stopped", timeout=60)
    assert stopped["gpus"] == [] and stopped["status_reason"] is None  # stopped, not failed
    assert "auto-stop: the start command exited (exit code 0); disks kept, GPUs returned" in causes(srv.ann, made["id"])
    assert len(docker_client.volumes.list(filters={"label": f"dockyard.instance={made['id']}"})) == 1
    assert any(n["kind"] == "autostop" and "train" in n["message"] for n in srv.ann.get("/notifications").json())
    srv.ann.delete(f"/instances/{made['id']}").raise_for_status()


def test_a_named_process_exiting_stops_it(srv):
    made = create(srv.ann, name="proc", command="cp /bin/sleep /tmp/trainer && (/tmp/trainer 12 &) && sleep infinity")
    wait_status(srv.ann, made["id"], "running", timeout=60)
    missing = srv.ann.patch(f"/instances/{made['id']}", json={"auto_stop_when_exits": "nosuch"})
    assert missing.status_code == 400 and "no process named 'nosuch'" in missing.json()["detail"]
    assert srv.ann.get(f"/instances/{made['id']}").json()["auto_stop_when_exits"] is None  # nothing changed
    bad = srv.ann.patch(f"/instances/{made['id']}", json={"auto_stop_when_exits": "a b;rm"})
    assert bad.status_code == 422
    for _ in range(20):  # the start command may still be copying
        watched = srv.ann.patch(f"/instances/{made['id']}", json={"auto_stop_when_exits": "trainer"})
        if watched.status_code == 200:
            break
        time.sleep(0.5)
    assert watched.status_code == 200, watched.text
    time.sleep(2)
    assert srv.ann.get(f"/instances/{made['id']}").json()["status"] == "running"
    wait_status(srv.ann, made["id"], "stopped", timeout=60)
    assert "auto-stop: process trainer exited" in causes(srv.ann, made["id"])
    srv.ann.delete(f"/instances/{made['id']}").raise_for_status()


def test_gpu_idle_on_simulated_gpus_is_accepted_but_cannot_fire(srv):
    out = srv.cli("create", "--image", "debian-12", "--gpus", "1", "--name", "sim", "--auto-stop-gpu-idle", "1",
                  "--gpu-under", "10", "--json", token_of="ann", check=True)
    made = json.loads(out.stdout)
    assert (made["auto_stop_gpu_idle_minutes"], made["auto_stop_gpu_idle_percent"]) == (1, 10)
    assert made["auto_stop_notes"] == ["cannot fire: no GPU readings"]
    wait_status(srv.ann, made["id"], "running", timeout=60)
    time.sleep(4 * MINUTE_S)
    assert srv.ann.get(f"/instances/{made['id']}").json()["status"] == "running"
    assert not any("warning" in c for c in causes(srv.ann, made["id"]))
    shown = srv.cli("show", "sim", token_of="ann", check=True).stdout
    assert "GPUs under 10% for 1 min" in shown and "cannot fire: no GPU readings" in shown
    srv.ann.delete(f"/instances/{made['id']}").raise_for_status()


def test_a_warning_precedes_an_idle_stop_and_keep_running_defers_it(srv):
    made = create(srv.ann, name="idle", auto_stop_idle_minutes=4)  # 8 s idle; warned 4 s before
    key = made["id"]
    wait_status(srv.ann, key, "running", timeout=60)
    assert srv.ann.post(f"/instances/{key}/keep").status_code == 409  # nothing pending yet
    deadline = time.monotonic() + 30
    while not srv.ann.get(f"/instances/{key}").json()["auto_stop_pending"]:
        assert time.monotonic() < deadline, causes(srv.ann, key)
        time.sleep(0.3)
    shown = srv.ann.get(f"/instances/{key}").json()
    assert shown["status"] == "running"
    assert shown["auto_stop_pending"].startswith("auto-stop warning: no SSH or Jupyter activity for 4 min")
    assert any(n["kind"] == "autostop_warning" and "idle" in n["message"] for n in srv.ann.get("/notifications").json())
    kept = srv.cli("keep", "idle", token_of="ann", check=True)
    assert "auto-stop" in kept.stdout
    assert srv.ann.post(f"/instances/{key}/keep").json()["detail"] == "no auto-stop is pending for instance idle"
    kept_at = time.monotonic()
    wait_status(srv.ann, key, "stopped", timeout=60)
    assert time.monotonic() - kept_at >= 4 * MINUTE_S - 1  # counted from the keep, not the start
    events = causes(srv.ann, key)
    order = [c.split(":")[0] if not c.startswith("auto-stop: kept") else "kept" for c in events
             if c.startswith("auto-stop")]
    assert order[-4:] == ["auto-stop warning", "kept", "auto-stop warning", "auto-stop"], events
    assert [c for c in events if c.startswith("auto-stop")][-1] == "auto-stop: no SSH or Jupyter activity for 4 min"
    srv.ann.delete(f"/instances/{key}").raise_for_status()


def test_operator_limits_hold_against_a_user_who_turns_them_off(docker_client):
    server = serve(autostop_idle_limit_minutes="3", autostop_max_limit_minutes="600")
    try:
        over = server.ann.post("/instances", json={"image": "debian-12", "gpu_count": 0,
                                                   "auto_stop_idle_minutes": 4})
        assert over.status_code == 400
        assert over.json()["detail"] == ("auto_stop_idle_minutes: 4 min is over the operator's limit for the "
                                         "idle stop, 3 min")
        assert live(server.ann) == []
        made = create(server.ann, name="capped", auto_stop_idle_minutes=None)  # asks for "off"
        assert (made["auto_stop_idle_minutes"], made["auto_stop_max_minutes"]) == (3, 600)
        key = made["id"]
        off = server.ann.patch(f"/instances/{key}", json={"auto_stop_idle_minutes": None,
                                                          "auto_stop_max_minutes": None})
        assert (off.json()["auto_stop_idle_minutes"], off.json()["auto_stop_max_minutes"]) == (3, 600)
        refused = server.cli("autostop", "capped", "--after", "11h", token_of="ann")
        assert refused.returncode == 1 and "operator's limit" in refused.stderr
        wait_status(server.ann, key, "stopped", timeout=60)
        assert "auto-stop: no SSH or Jupyter activity for 3 min" in causes(server.ann, key)
        server.ann.delete(f"/instances/{key}").raise_for_status()
    finally:
        server.close()


def _execute(lab_url: str, token: str, base: str, kernel_id: str, code: str) -> None:
    """Send code to a kernel over its WebSocket and leave: no browser stays connected."""
    import uuid

    from websockets.sync.client import connect

    ws_url = lab_url.replace("http", "ws") + f"{base}/api/kernels/{kernel_id}/channels"
    with connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=20) as ws:
        ws.send(json.dumps({
            "header": {"msg_id": uuid.uuid4().hex, "username": "ann", "session": uuid.uuid4().hex,
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the kernel says it is at work
            message = json.loads(ws.recv(timeout=30))
            if message.get("msg_type") == "status" and message["content"].get("execution_state") == "busy":
                return
    raise AssertionError("the kernel never went busy")


def test_a_busy_kernel_with_no_browser_keeps_it_running_and_an_idle_open_tab_does_not(srv, pytorch_image):
    made = create(srv.ann, image="pytorch-2.13-cpu", name="nb")
    key = made["id"]
    wait_status(srv.ann, key, "running", timeout=180)
    http = srv.instance_client(key, srv.tokens["ann"])  # JupyterLab is served on the instance's own host
    base = f"/instances/{key}/jupyter"
    for _ in range(240):  # JupyterLab takes a while to come up on a loaded machine
        if http.get(f"{base}/api/status").status_code == 200:
            break
        time.sleep(0.5)
    kernel = http.post(f"{base}/api/kernels", json={"name": "python3"})
    assert kernel.status_code == 201, kernel.text
    _execute(srv.instance_url(key), srv.tokens["ann"], base, kernel.json()["id"], "import time; time.sleep(30)")
    busy_until = time.monotonic() + 28
    srv.ann.patch(f"/instances/{key}", json={"auto_stop_idle_minutes": 4}).raise_for_status()  # 8 s
    while time.monotonic() < busy_until - 2:  # far past 8 s without SSH, a browser or a request
        assert srv.ann.get(f"/instances/{key}").json()["status"] == "running", causes(srv.ann, key)
        time.sleep(1)
    # The kernel is done; a tab stays open, polling as JupyterLab does: that is no activity.
    polled = time.monotonic()
    while srv.ann.get(f"/instances/{key}").json()["status"] == "running":
        assert time.monotonic() - polled < 60, causes(srv.ann, key)
        polling = http.get(f"{base}/api/kernels")  # 409 once the stop has begun (after the look above)
        assert polling.status_code == 200 or srv.ann.get(f"/instances/{key}").json()["status"] != "running"
        http.get(f"{base}/api/sessions")
        time.sleep(1)
    wait_status(srv.ann, key, "stopped", timeout=60)
    assert "auto-stop: no SSH or Jupyter activity for 4 min" in causes(srv.ann, key)
    srv.ann.delete(f"/instances/{key}").raise_for_status()


def run_inside(api, key, script: str) -> dict:
    answer = api.post(f"/instances/{key}/exec", json={"command": ["sh", "-c", script]}, timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_dockyard_shutdown_stops_its_own_instance_with_a_token_only_it_holds(docker_client):
    # A pool of its own: another test server rebuilding the host firewall's chain for its
    # pools leaves this one's traffic alone (protect_host stays on here).
    server = serve(network_pool="10.229.0.0/16")
    try:
        ann, inside_port = server.ann, int(server.env["DOCKYARD_INSIDE_PORT"])
        mine = create(ann, name="selfstop")
        other = create(ann, name="bystander")
        for made in (mine, other):
            wait_status(ann, made["id"], "running", timeout=60)
        config = run_inside(ann, mine["id"], "ls -l /etc/dockyard/shutdown; cat /etc/dockyard/shutdown")
        assert config["output"].startswith("-rw------- ") and f"http://GATEWAY:{inside_port}" in config["output"]
        token = config["output"].strip().splitlines()[-1]
        assert token not in run_inside(ann, other["id"], "cat /etc/dockyard/shutdown")["output"]
        # Nothing but POST /stop with a known token does anything.
        with httpx.Client(base_url=f"http://127.0.0.1:{inside_port}", timeout=10) as listener:
            assert listener.post("/stop", headers={"Authorization": "Bearer nope"}).status_code == 401
            assert listener.post("/stop").status_code == 401
            assert listener.post("/instances", headers={"Authorization": f"Bearer {token}"}).status_code == 404
            assert listener.get("/stop").status_code == 405
        assert ann.get(f"/instances/{mine['id']}").json()["status"] == "running"

        said = run_inside(ann, mine["id"], "dockyard-shutdown")
        assert said["exit_code"] in (0, -1, 137), said  # the stop may end the exec with the container
        stopped = wait_status(ann, mine["id"], "stopped", timeout=60)
        assert stopped["status_reason"] is None
        assert "stopped from inside the instance (dockyard-shutdown); disks kept, GPUs returned" in causes(
            ann, mine["id"])
        assert len(docker_client.volumes.list(filters={"label": f"dockyard.instance={mine['id']}"})) == 1
        assert ann.get(f"/instances/{other['id']}").json()["status"] == "running"  # only its own
        assert any(n["kind"] == "shutdown" for n in ann.get("/notifications").json())

        # A new start writes a new token: the old one stops nothing any more.
        ann.post(f"/instances/{mine['id']}/start").raise_for_status()
        wait_status(ann, mine["id"], "running", timeout=60)
        with httpx.Client(base_url=f"http://127.0.0.1:{inside_port}", timeout=10) as listener:
            assert listener.post("/stop", headers={"Authorization": f"Bearer {token}"}).status_code == 401
        assert token not in run_inside(ann, mine["id"], "cat /etc/dockyard/shutdown")["output"]
        for made in (mine, other):
            ann.delete(f"/instances/{made['id']}").raise_for_status()
    finally:
        server.close()
