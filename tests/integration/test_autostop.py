"""The auto-stop policy and notifications, against a real server and the real
Docker engine. One policy minute lasts 2 seconds here (`autostop_minute_s`, a setting
meant for tests) and the loop looks every second; everything else is the product."""

import json
import subprocess
import time

import pytest

from tests.harness import BASE_IMAGE, Server, wait_status
from tests.integration.test_ssh import keypair, ssh, ssh_args, wait_for_sshd

MINUTE_S = 2
IDLE = "auto_stop_idle_minutes"
MAX = "auto_stop_max_minutes"


@pytest.fixture(scope="module")
def srv(docker_client):
    server = Server(autostop_interval_s="1", autostop_minute_s=str(MINUTE_S), activity_interval_s="1").start()
    admin = server.add_user("ops", admin=True)
    admin.post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    server.ann = server.add_user("ann")
    server.ben = server.add_user("ben")
    yield server
    server.close()


def causes(api, key) -> list[str]:
    return [e["cause"] for e in api.get(f"/instances/{key}/events").json()]


def live(api) -> list[dict]:
    return [i for i in api.get("/instances").json() if i["status"] != "released"]


BAD = [
    (IDLE, 0, "greater than or equal to 1"),
    (IDLE, 10081, "less than or equal to 10080"),
    (MAX, -5, "greater than or equal to 1"),
    (IDLE, "30", "valid integer"),
    (MAX, 1.5, "valid integer"),
    (IDLE, True, "valid integer"),
]


@pytest.mark.parametrize("field, value, word", BAD)
def test_bad_policy_values_are_refused_and_nothing_is_created(srv, field, value, word):
    refused = srv.ann.post("/instances", json={"image": "debian-12", "gpu_count": 0, field: value})
    assert refused.status_code == 422, refused.text
    assert field in refused.json()["detail"] and word in refused.json()["detail"]
    assert live(srv.ann) == []


def test_policy_changes_are_the_owners_alone(srv):
    made = srv.ann.post("/instances", json={"image": "debian-12", "gpu_count": 0, "name": "mine"}).json()
    assert (made[IDLE], made[MAX]) == (None, None)
    key = made["id"]

    for field, value, word in BAD:
        refused = srv.ann.patch(f"/instances/{key}", json={IDLE: 5, field: value})
        assert refused.status_code == 422, refused.text
        assert field in refused.json()["detail"] and word in refused.json()["detail"]
    empty = srv.ann.patch(f"/instances/{key}", json={})
    assert empty.status_code == 400 and IDLE in empty.json()["detail"]
    unknown = srv.ann.patch(f"/instances/{key}", json={"auto_stop": 5})
    assert unknown.status_code == 422 and "auto_stop" in unknown.json()["detail"]

    assert srv.ann.get(f"/instances/{key}").json()[IDLE] is None  # the refusals changed nothing

    # Only the fields given change; null turns one off.
    assert srv.ann.patch(f"/instances/{key}", json={IDLE: 600, MAX: 480}).json()[MAX] == 480
    changed = srv.ann.patch(f"/instances/{key}", json={MAX: None}).json()
    assert (changed[IDLE], changed[MAX]) == (600, None)
    assert "auto-stop policy set by ann: idle 10 h, max runtime off" in causes(srv.ann, key)

    # Another user: 404 by id and by name, and nothing changes.
    assert srv.ben.patch(f"/instances/{key}", json={IDLE: 1}).status_code == 404
    assert srv.ben.patch("/instances/mine", json={IDLE: 1}).status_code == 404
    assert srv.cli("autostop", "mine", "--idle", "1", token_of="ben").returncode == 1
    assert srv.ann.get(f"/instances/{key}").json()[IDLE] == 600

    # The CLI: one duration parser for create and autostop; bad ones never reach the server.
    out = srv.cli("autostop", "mine", "--idle", "1h30m", "--after", "off", "--json", token_of="ann", check=True)
    assert json.loads(out.stdout)[IDLE] == 90
    bad = srv.cli("autostop", "mine", "--idle", "soon", token_of="ann")
    assert bad.returncode == 1 and "--idle" in bad.stderr and "not a duration" in bad.stderr
    bad = srv.cli("create", "--image", "debian-12", "--gpus", "0", "--auto-stop-after", "8d", token_of="ann")
    assert bad.returncode == 1 and "--auto-stop-after" in bad.stderr
    shown = srv.cli("show", "mine", token_of="ann", check=True).stdout
    assert "auto-stop  idle 1 h 30 min, max runtime off" in shown

    srv.ann.delete(f"/instances/{key}").raise_for_status()
    wait_status(srv.ann, key, "released")
    released = srv.ann.patch(f"/instances/{key}", json={IDLE: 5})
    assert released.status_code == 409 and "released" in released.json()["detail"]


def test_idle_and_long_running_instances_are_stopped_and_their_owner_told(srv, docker_client):
    srv.ann.post("/notifications/read").raise_for_status()  # earlier tests' (their releases kept volumes)
    result = srv.cli("create", "--image", "debian-12", "--gpus", "1", "--name", "idle", "--auto-stop-idle", "2m",
                     "--json", token_of="ann", check=True)
    idle = json.loads(result.stdout)
    assert idle[IDLE] == 2 and idle[MAX] is None
    capped = srv.ann.post("/instances", json={"image": "debian-12", "gpu_count": 0, "name": "capped",
                                              MAX: 3}).json()
    plain = srv.ann.post("/instances", json={"image": "debian-12", "gpu_count": 0, "name": "plain"}).json()
    theirs = srv.ben.post("/instances", json={"image": "debian-12", "gpu_count": 0, "name": "theirs",
                                              IDLE: 600}).json()
    for api, made in ((srv.ann, idle), (srv.ann, capped), (srv.ann, plain), (srv.ben, theirs)):
        wait_status(api, made["id"], "running")

    stopped = wait_status(srv.ann, idle["id"], "stopped", timeout=60)
    assert stopped["gpus"] == []  # the GPU went back to the pool
    assert "auto-stop: no SSH or Jupyter activity for 2 min" in causes(srv.ann, idle["id"])
    wait_status(srv.ann, capped["id"], "stopped", timeout=60)
    assert "auto-stop: ran for 3 min, the policy's maximum runtime" in causes(srv.ann, capped["id"])

    # Stopped, never released: the data disk is still there. The others keep running.
    label = {"label": f"dockyard.instance={idle['id']}"}
    assert len(docker_client.volumes.list(filters=label)) == 1
    time.sleep(2 * MINUTE_S)
    assert srv.ann.get(f"/instances/{plain['id']}").json()["status"] == "running"
    assert srv.ben.get(f"/instances/{theirs['id']}").json()["status"] == "running"

    # A warning came first for each (read here), then one notification each, for the owner
    # only, newest first, unread.
    warnings = [n for n in srv.ann.get("/notifications").json() if n["kind"] == "autostop_warning"]
    assert {n["message"].split()[1] for n in warnings} == {"idle", "capped"}
    assert all("unless you keep it running" in n["message"] for n in warnings)
    srv.ann.post("/notifications/read", json={"ids": [n["id"] for n in warnings]}).raise_for_status()
    # (Earlier tests' releases kept their data disks as volumes: those notices are not these.)
    notes = [n for n in srv.ann.get("/notifications").json() if n["kind"] not in ("autostop_warning", "volume")]
    assert [n["kind"] for n in notes] == ["autostop", "autostop"]
    assert notes[0]["at"] >= notes[1]["at"] and not any(n["read"] for n in notes)
    assert {n["message"].split()[1] for n in notes} == {"idle", "capped"}
    assert any("no SSH or Jupyter activity for 2 min" in n["message"] and "disks are kept" in n["message"]
               for n in notes)
    assert srv.ben.get("/notifications").json() == []
    listed = json.loads(srv.cli("notifications", "--json", token_of="ann", check=True).stdout)
    assert [n["id"] for n in listed if n["kind"] == "autostop"] == [n["id"] for n in notes]

    # Marking read: another user's ids are 404 and mark nothing; then one, then all.
    assert srv.ben.post("/notifications/read", json={"ids": [notes[0]["id"]]}).status_code == 404
    assert srv.ann.post("/notifications/read", json={"ids": [notes[0]["id"], 999999]}).status_code == 404
    assert srv.ann.get("/notifications", params={"unread": True}).json() == notes
    assert srv.ann.post("/notifications/read", json={"ids": [notes[0]["id"]]}).json() == {"marked": 1, "unread": 1}
    assert [n["read"] for n in srv.ann.get("/notifications").json() if n["kind"] == "autostop"] == [True, False]
    assert srv.ann.post("/notifications/read").json() == {"marked": 1, "unread": 0}

    # Started again, it runs until the policy says so again: idle counts from the new start.
    srv.ann.post(f"/instances/{idle['id']}/start").raise_for_status()
    wait_status(srv.ann, idle["id"], "running")
    wait_status(srv.ann, idle["id"], "stopped", timeout=60)
    assert causes(srv.ann, idle["id"]).count("auto-stop: no SSH or Jupyter activity for 2 min") == 2

    for api, made in ((srv.ann, idle), (srv.ann, capped), (srv.ann, plain), (srv.ben, theirs)):
        api.delete(f"/instances/{made['id']}").raise_for_status()


def test_an_open_ssh_session_keeps_an_instance_running(srv, pytorch_image, tmp_path):
    key = keypair(tmp_path, "k")
    srv.ann.post("/keys", json={"name": "k", "public_key": key.with_suffix(".pub").read_text()}).raise_for_status()
    made = srv.ann.post("/instances", json={"image": "pytorch-2.13-cpu", "gpu_count": 0, "name": "busy"}).json()
    instance = wait_status(srv.ann, made["id"], "running", timeout=120)
    wait_for_sshd(instance, key)
    session = subprocess.Popen(["ssh", *ssh_args(instance, key), "sleep 120"])
    try:
        for _ in range(40):
            if srv.ann.get("/instances/busy").json()["last_ssh_at"]:
                break
            time.sleep(0.5)
        # 3 policy minutes idle: 6 s here. The session is seen every second, so it stays.
        srv.cli("autostop", "busy", "--idle", "3", token_of="ann", check=True)
        time.sleep(6 * MINUTE_S)
        assert srv.ann.get("/instances/busy").json()["status"] == "running"
    finally:
        session.terminate()
        session.wait(10)
    # Without the session, it stops 3 policy minutes after the last activity.
    wait_status(srv.ann, made["id"], "stopped", timeout=60)
    assert "auto-stop: no SSH or Jupyter activity for 3 min" in causes(srv.ann, made["id"])
    assert ssh(instance, key, "true").returncode == 255  # really stopped
    srv.ann.delete(f"/instances/{made['id']}").raise_for_status()
