"""`kill -9` of the server at any moment, then a restart: nothing leaks, nothing is
assigned twice, nothing stays in a transitional status; the reconciler heals drift."""

import random
import threading
import time

import pytest

from tests.harness import BASE_IMAGE, Server, wait_status

TRANSITIONAL = {"creating", "starting", "stopping", "releasing"}


@pytest.fixture
def crashy(docker_client):
    srv = Server(simulated_gpus="A100-80GB:6").start()
    srv.add_user("ops", admin=True).post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    srv.api = srv.add_user("carol")
    yield srv
    srv.close()


def settle(srv, timeout=60) -> list[dict]:
    """Wait until no instance is transitional; return them all."""
    deadline = time.monotonic() + timeout
    while True:
        instances = srv.api.get("/instances", params={"all": True}).json()
        if not any(i["status"] in TRANSITIONAL for i in instances):
            return instances
        assert time.monotonic() < deadline, [(i["name"], i["status"]) for i in instances]
        time.sleep(0.3)


def check_invariants(srv, docker_client) -> list[dict]:
    instances = settle(srv)
    label = {"label": f"dockyard.deployment={srv.deployment}"}
    containers = {c.id: c for c in docker_client.containers.list(all=True, filters=label)}
    live = [i for i in instances if i["status"] != "released"]
    # Every container belongs to a live instance, one container each.
    owners = [c.labels["dockyard.instance"] for c in containers.values()]
    assert sorted(owners) == sorted(set(owners)), "two containers for one instance"
    assert set(owners) <= {i["id"] for i in live}, "a leaked container"
    for instance in live:
        mine = [c for c in containers.values() if c.labels["dockyard.instance"] == instance["id"]]
        if instance["status"] == "running":
            assert mine and mine[0].status == "running", instance
            assert len(instance["gpus"]) == instance["gpu_count"] or instance["no_gpu"]
        else:
            assert not instance["gpus"], f"{instance['status']} instance holds GPUs"
            assert all(c.status != "running" for c in mine), instance
    uuids = [g["uuid"] for i in instances for g in i["gpus"]]
    assert len(uuids) == len(set(uuids)), "a GPU is assigned twice"
    # A release keeps the data disk as a volume: a crash leaves the instance or the volume,
    # never neither (an instance that never ran had no data disk to keep).
    kept_from = {v["source_instance"] for v in srv.api.get("/volumes").json()}
    released = [i for i in instances if i["status"] == "released"]
    for instance in released:
        assert instance["started_at"] is None or instance["name"] in kept_from, f"{instance['name']}'s data was lost"
    disks = {f"dy-{srv.deployment}-{i['id']}-data" for i in live + [i for i in released if i["name"] in kept_from]}
    volumes = {v.name for v in docker_client.volumes.list(filters=label)}
    assert volumes <= disks, "a leaked data disk"
    assert {d for d in disks if d.removesuffix("-data").rsplit("-", 1)[1] in {i["id"] for i in released}} <= volumes, \
        "a kept volume without its disk"
    return instances


def test_kill_during_creates_heals_on_restart(crashy, docker_client):
    for n in range(3):
        crashy.api.post("/instances", json={"image": "debian-12", "gpu_model": "A100-80GB", "gpu_count": 1,
                                            "name": f"c{n}"}).raise_for_status()
    crashy.kill9()
    crashy.start()
    instances = check_invariants(crashy, docker_client)
    assert sorted(i["status"] for i in instances) == ["running"] * 3


def test_kill_during_stop_and_release_heals_on_restart(crashy, docker_client):
    ids = []
    for n in range(2):
        ids.append(crashy.api.post("/instances", json={"image": "debian-12", "gpu_count": 1}).json()["id"])
    for key in ids:
        wait_status(crashy.api, key, "running")
    crashy.api.post(f"/instances/{ids[0]}/stop").raise_for_status()
    crashy.api.delete(f"/instances/{ids[1]}").raise_for_status()
    crashy.kill9()
    crashy.start()
    check_invariants(crashy, docker_client)
    assert crashy.api.get(f"/instances/{ids[0]}").json()["status"] == "stopped"
    assert crashy.api.get(f"/instances/{ids[1]}").json()["status"] == "released"


def test_kill_at_random_moments(crashy, docker_client):
    """Several rounds of random creates, stops, starts, releases and clones with a kill -9
    somewhere in the middle."""
    rng = random.Random(11)
    for round_ in range(4):
        instances = [i for i in crashy.api.get("/instances").json()]

        def act():
            for _ in range(6):
                choice = rng.random()
                try:
                    if choice < 0.4 or not instances:
                        crashy.api.post("/instances", json={"image": "debian-12", "gpu_count": rng.choice([0, 1, 2])})
                    else:
                        target = rng.choice(instances)["id"]
                        action = rng.choice(["stop", "start", "start-no-gpu", "rm", "clone"])
                        if action == "rm":
                            crashy.api.delete(f"/instances/{target}")
                        elif action == "clone":
                            crashy.api.post(f"/instances/{target}/clone",
                                            json={"name": f"cl{rng.randrange(10**6)}", "gpu_count": 0})
                        elif action == "start-no-gpu":
                            crashy.api.post(f"/instances/{target}/start", json={"no_gpu": True})
                        else:
                            crashy.api.post(f"/instances/{target}/{action}")
                except Exception:
                    return  # the server died under us: that is the point

        worker = threading.Thread(target=act)
        worker.start()
        time.sleep(rng.uniform(0.05, 1.5))
        crashy.kill9()
        worker.join()
        crashy.start()
        check_invariants(crashy, docker_client)


def test_reconciler_heals_drift(crashy, docker_client):
    api = crashy.api
    running = api.post("/instances", json={"image": "debian-12", "gpu_count": 1}).json()
    doomed = api.post("/instances", json={"image": "debian-12", "gpu_count": 1}).json()
    for instance in (running, doomed):
        wait_status(api, instance["id"], "running")

    # A container of ours that no instance owns is removed (created, not started: the
    # reconciler may remove it between a create and a start, which would fail the start).
    stray = docker_client.containers.create(
        BASE_IMAGE, "sleep infinity",
        labels={"dockyard.deployment": crashy.deployment, "dockyard.instance": "nosuchinstance"},
    )
    # A container that vanished behind our back fails its instance and frees its GPUs.
    docker_client.containers.get(f"dy-{crashy.deployment}-{doomed['id']}").remove(force=True)
    # A container stopped behind our back stops its instance (the GPU bill stops).
    docker_client.containers.get(f"dy-{crashy.deployment}-{running['id']}").stop(timeout=1)

    failed = wait_status(api, doomed["id"], "failed", timeout=30)
    assert "vanished" in failed["status_reason"] and failed["gpus"] == []
    assert wait_status(api, running["id"], "stopped", timeout=30)["gpus"] == []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and docker_client.containers.list(all=True, filters={"id": stray.id}):
        time.sleep(0.3)
    assert not docker_client.containers.list(all=True, filters={"id": stray.id})
    check_invariants(crashy, docker_client)
    # A failed instance can still be released, and its data disk goes with it.
    api.delete(f"/instances/{doomed['id']}").raise_for_status()
    wait_status(api, doomed["id"], "released")


def test_every_accepted_create_ends_running_after_kills_mid_flight(docker_client):
    """A container made by a process killed before it recorded the container's id is
    adopted by the restart, not judged vanished a few seconds later."""
    srv = Server(simulated_gpus="A100-80GB:24").start()
    try:
        srv.add_user("ops", admin=True).post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
        api = srv.add_user("dana")
        earlier: set[str] = set()
        for delay in (0.4, 1.2, 2.5):
            accepted: list[str] = []

            def create(n: int) -> None:
                try:
                    reply = api.post("/instances", json={"image": "debian-12", "gpu_count": 1, "name": f"k{n}"})
                except Exception:
                    return  # killed before it answered: not accepted
                if reply.status_code == 201:
                    accepted.append(reply.json()["id"])

            workers = [threading.Thread(target=create, args=(n,)) for n in range(20)]
            for worker in workers:
                worker.start()
            time.sleep(delay)
            srv.kill9()
            for worker in workers:
                worker.join()
            srv.start()
            srv.api = api
            settle(srv)
            time.sleep(4)  # several reconciler passes: a wrongly judged instance fails here
            statuses = {i["id"]: (i["status"], i["status_reason"])
                        for i in api.get("/instances", params={"all": True}).json() if i["id"] not in earlier}
            # Answered or not, every create the database took must end running.
            assert set(accepted) <= set(statuses)
            assert all(status == "running" for status, _ in statuses.values()), statuses
            check_invariants(srv, docker_client)
            for key in statuses:
                api.delete(f"/instances/{key}").raise_for_status()
            earlier |= set(statuses)
            settle(srv)
    finally:
        srv.close()


def test_a_stop_past_its_deadline_kills_the_container(docker_client):
    """A command that ignores SIGTERM: with a two-minute stop timeout the stop would wait
    that long; its 2 s deadline kills the container and returns the GPU. (Which of the
    deadline pass and the driver, whose stop returns at the kill, records the move is a
    race; the unit tests check the deadline's own reason.)"""
    srv = Server(stop_timeout_s="120", stopping_timeout_s="2").start()
    try:
        srv.add_user("ops", admin=True).post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
        api = srv.add_user("erin")
        key = api.post("/instances", json={"image": "debian-12", "gpu_count": 1,
                                           "command": "trap '' TERM; while true; do sleep 1; done"}).json()["id"]
        wait_status(api, key, "running")
        api.post(f"/instances/{key}/stop").raise_for_status()
        stopped = wait_status(api, key, "stopped", timeout=30)
        assert stopped["gpus"] == []
        assert docker_client.containers.get(f"dy-{srv.deployment}-{key}").status == "exited"
    finally:
        srv.close()
