"""The start queue against the real Docker engine with 4 simulated GPUs:
contention between three users, timeouts, cancelling, resize on start, kill -9."""

import json
import time
from datetime import datetime

import pytest

from tests.harness import BASE_IMAGE, Server, wait_status

MODEL = "A100-80GB"
QUEUE_MINUTE_S = 4


@pytest.fixture(scope="module")
def srv(docker_client):
    # A queue timeout's minute lasts QUEUE_MINUTE_S here.
    server = Server(simulated_gpus=f"{MODEL}:4", queue_minute_s=str(QUEUE_MINUTE_S)).start()
    server.add_user("ops", admin=True).post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    server.users = {name: server.add_user(name) for name in ("alice", "bob", "carol")}
    yield server
    server.close()


@pytest.fixture
def users(srv):
    yield srv.users
    for api in srv.users.values():  # each test starts with all 4 GPUs free
        for instance in api.get("/instances").json():
            api.delete(f"/instances/{instance['id']}").raise_for_status()
        for instance in api.get("/instances").json():
            wait_status(api, instance["id"], "released")


def create(api, name, gpus, **extra):
    response = api.post("/instances", json={"image": "debian-12", "name": name, "gpu_model": MODEL,
                                            "gpu_count": gpus, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def running(api, name, gpus):
    return wait_status(api, create(api, name, gpus)["id"], "running")


def stop(api, instance):
    api.post(f"/instances/{instance['id']}/stop").raise_for_status()
    return wait_status(api, instance["id"], "stopped")


def show(api, instance):
    return api.get(f"/instances/{instance['id']}").json()


def causes(api, instance):
    return [e["cause"] for e in api.get(f"/instances/{instance['id']}/events").json()]


def test_three_users_contend_for_four_gpus_and_queued_starts_begin_in_order(srv, users):
    alice, bob, carol = users["alice"], users["bob"], users["carol"]
    a1, b1 = running(alice, "a1", 2), running(bob, "b1", 2)

    # No GPU free: the refusal names the count and the ways out, and makes nothing.
    refused = carol.post("/instances", json={"image": "debian-12", "name": "c1", "gpu_model": MODEL, "gpu_count": 4})
    assert refused.status_code == 409
    body = refused.json()
    assert body["free"] == 0 and body["needed"] == 4 and body["node"] == "local" and body["gpu_model"] == MODEL
    assert body["ways_out"] == ["no_gpu", "queue"] and "--queue" in body["detail"]
    assert carol.get("/instances").json() == []

    # carol waits for 4, then alice for 1 (CLI): positions 1 and 2.
    c1 = create(carol, "c1", 4, queue=True)
    assert c1["status"] == "queued" and c1["queue_position"] == 1 and c1["gpus"] == []
    line = srv.cli("create", "--image", "debian-12", "--name", "a2", "--gpu-model", MODEL, "--gpus", "1", "--queue",
                   token_of="alice")
    assert line.returncode == 0, line.stderr
    assert "queued #2" in line.stdout
    a2 = next(i for i in alice.get("/instances").json() if i["name"] == "a2")
    assert a2["queue_position"] == 2
    assert "queued #2" in srv.cli("ls", token_of="alice").stdout

    # bob stops: 2 free, but the 4-GPU waiter is first, so the 1-GPU one behind it
    # waits, and a plain start that would jump the line is refused.
    stop(bob, b1)
    time.sleep(1.5)
    assert show(carol, c1)["status"] == "queued" and show(alice, a2)["status"] == "queued"
    jump = bob.post(f"/instances/{b1['id']}/start", json={"gpu_count": 1})
    assert jump.status_code == 409 and jump.json()["free"] == 2 and jump.json()["waiting"] == 2, jump.text
    assert "2 queued requests wait for them first" in jump.json()["detail"]
    assert jump.json()["ways_out"] == ["no_gpu", "queue", "migrate"] and "--migrate" in jump.json()["detail"]
    assert show(bob, b1)["gpu_count"] == 2  # the refused resize changed nothing

    # alice stops: 4 free, carol's 4-GPU instance starts by itself; alice's is next.
    stop(alice, a1)
    c1 = wait_status(carol, c1["id"], "running", timeout=30)
    assert len(c1["gpus"]) == 4
    assert any(c.startswith("left the queue after") for c in causes(carol, c1))
    assert any("is starting" in n["message"] for n in carol.get("/notifications").json())
    assert show(alice, a2)["queue_position"] == 1

    stop(carol, c1)
    a2 = wait_status(alice, a2["id"], "running", timeout=30)
    assert len(a2["gpus"]) == 1


def test_stop_cancels_a_queued_start_and_rm_releases_a_queued_create(srv, users):
    alice, bob = users["alice"], users["bob"]
    waiting = stop(bob, running(bob, "waiting", 2))
    holder = running(alice, "holder", 3)
    queued = bob.post(f"/instances/{waiting['id']}/start", json={"queue": True}).json()
    assert queued["status"] == "queued" and queued["queue_position"] == 1
    assert bob.post(f"/instances/{waiting['id']}/start", json={"queue": True}).status_code == 409  # already queued
    fresh = create(bob, "fresh", 1, queue=True)  # 1 GPU is free, but it is behind the 2-GPU waiter
    assert fresh["status"] == "queued" and fresh["queue_position"] == 2

    cancelled = bob.post(f"/instances/{waiting['id']}/stop").json()
    assert cancelled["status"] == "stopped"  # at once: nothing ran
    assert causes(bob, waiting)[-1] == "left the queue: stop requested by bob"
    # The head gone, the one behind it fits in the free GPU and starts by itself.
    assert len(wait_status(bob, fresh["id"], "running", timeout=30)["gpus"]) == 1

    later = create(bob, "later", 2, queue=True)
    bob.delete(f"/instances/{later['id']}").raise_for_status()
    assert wait_status(bob, later["id"], "released")["gpus"] == []
    stop(alice, holder)
    time.sleep(1.5)
    assert show(bob, waiting)["status"] == "stopped"  # it left the queue: it does not start


def test_a_queue_timeout_returns_the_instance_to_stopped_and_tells_its_owner(srv, users):
    alice, bob = users["alice"], users["bob"]
    running(alice, "holder", 4)
    line = srv.cli("create", "--image", "debian-12", "--name", "patient", "--gpu-model", MODEL, "--gpus", "1",
                   "--queue", "--queue-timeout", "1m", "--json", token_of="bob")
    assert line.returncode == 0, line.stderr
    queued = json.loads(line.stdout)
    assert queued["status"] == "queued" and queued["queue_deadline"]
    waited = (datetime.fromisoformat(queued["queue_deadline"]) - datetime.fromisoformat(queued["queued_at"]))
    assert waited.total_seconds() == pytest.approx(QUEUE_MINUTE_S, abs=0.1)
    assert show(bob, queued)["status"] == "queued"
    stopped = wait_status(bob, queued["id"], "stopped", timeout=30)
    assert stopped["gpus"] == []
    assert causes(bob, queued)[-1].startswith("queue timeout")
    assert any("queue timeout" in n["message"] for n in bob.get("/notifications").json())


@pytest.mark.parametrize("body, field", [
    ({"queue": True, "queue_timeout_minutes": -5}, "queue_timeout_minutes"),
    ({"queue": True, "queue_timeout_minutes": 7 * 24 * 60 + 1}, "queue_timeout_minutes"),
    ({"queue_timeout_minutes": 30}, "queue_timeout_minutes"),
    ({"gpu_count": 5}, "gpu_count"),
    ({"gpu_count": 0}, "gpu_count"),
    ({"gpu_count": 2, "no_gpu": True}, "gpu_count"),
    ({"queue": True, "no_gpu": True}, "queue"),
])
def test_bad_start_options_are_refused_naming_the_field_and_change_nothing(srv, users, body, field):
    alice = users["alice"]
    instance = stop(alice, running(alice, "picky", 1))
    refused = alice.post(f"/instances/{instance['id']}/start", json=body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["field"] == field and field in refused.json()["detail"]
    after = show(alice, instance)
    assert (after["status"], after["gpu_count"], after["no_gpu"]) == ("stopped", 1, False)


def test_bad_create_queue_options_are_refused(srv, users):
    alice = users["alice"]
    for extra, field in (({"queue": True, "queue_timeout_minutes": 0}, "queue_timeout_minutes"),
                         ({"queue": True, "gpu_count": 0}, "queue")):
        refused = alice.post("/instances", json={"image": "debian-12", "gpu_model": MODEL, "gpu_count": 1, **extra})
        assert refused.status_code == 400 and refused.json()["field"] == field, refused.text
    assert alice.get("/instances").json() == []


def test_resize_on_start_changes_gpus_cpu_and_memory_for_later_starts(srv, users, docker_client):
    alice = users["alice"]
    instance = stop(alice, running(alice, "grow", 1))
    limits = lambda: docker_client.containers.get(f"dy-{srv.deployment}-{instance['id']}").attrs["HostConfig"]
    one = limits()
    result = srv.cli("start", instance["id"], "--gpus", "3", "--wait", "--json", token_of="alice")
    assert result.returncode == 0, result.stderr
    grown = json.loads(result.stdout)
    assert grown["gpu_count"] == 3 and len(grown["gpus"]) == 3
    three = limits()
    assert three["NanoCpus"] == 3 * one["NanoCpus"]
    assert three["Memory"] == 3 * one["Memory"]
    stop(alice, grown)
    alice.post(f"/instances/{instance['id']}/start").raise_for_status()
    assert len(wait_status(alice, instance["id"], "running")["gpus"]) == 3  # kept for later starts


def test_waiters_survive_kill_9_and_start_in_order_after_the_restart(docker_client):
    server = Server(simulated_gpus=f"{MODEL}:4").start()
    try:
        server.add_user("ops", admin=True).post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"})
        alice, bob = server.add_user("alice"), server.add_user("bob")
        holder = running(alice, "holder", 4)
        first = create(bob, "first", 2, queue=True)
        second = create(alice, "second", 3, queue=True)
        third = create(bob, "third", 2, queue=True)
        server.kill9()
        server.start()
        alice, bob = server.client(server.tokens["alice"]), server.client(server.tokens["bob"])
        assert [show(api, i)["queue_position"] for api, i in ((bob, first), (alice, second), (bob, third))] == [1, 2, 3]
        assert show(alice, holder)["status"] == "running"

        stop(alice, holder)
        wait_status(bob, first["id"], "running", timeout=30)
        time.sleep(1.5)
        # 2 GPUs are free, but the 3-GPU waiter is next: the 2-GPU one behind it waits.
        assert show(alice, second)["status"] == "queued" and show(bob, third)["status"] == "queued"
        stop(bob, show(bob, first))
        wait_status(alice, second["id"], "running", timeout=30)
        assert show(bob, third)["status"] == "queued"
    finally:
        server.close()
