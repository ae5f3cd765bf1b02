"""The start queue on nodes that share GPUs, against the real Docker
engine with two simulated GPUs in halves: shares are not queued, a line holds back the
halves of the GPUs it waits for, and a queued start is placed like any other."""

import pytest

from tests.harness import BASE_IMAGE, Server, wait_status

MODEL = "RTX-4090"


@pytest.fixture(scope="module")
def srv(docker_client):
    server = Server(simulated_gpus=f"{MODEL}:2", gpu_sharing="mps:2").start()
    server.add_user("ops", admin=True).post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    server.alice, server.bob = server.add_user("alice"), server.add_user("bob")
    yield server
    server.close()


def post(api, path, **body):
    return api.post(path, json=body)


def create(api, name, **body):
    answer = post(api, "/instances", image="debian-12", name=name, gpu_model=MODEL, **body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def gpus_of(api, instance):
    return sorted(g["index"] for g in api.get(f"/instances/{instance['id']}").json()["gpus"])


def test_shares_are_not_queued_and_a_line_keeps_its_gpus_from_new_shares(srv):
    alice, bob = srv.alice, srv.bob
    half = wait_status(alice, create(alice, "half", gpu_count=1, gpu_share="0.5")["id"], "running")
    whole = wait_status(bob, create(bob, "whole", gpu_count=1)["id"], "running")
    assert gpus_of(alice, half) != gpus_of(bob, whole)  # no GPU is free whole now

    # A share never waits in line: refused naming the field, nothing made.
    refused = post(alice, "/instances", image="debian-12", name="h2", gpu_model=MODEL, gpu_count=1, gpu_share="0.5",
                   queue=True)
    assert refused.status_code == 400 and refused.json()["field"] == "queue", refused.text
    assert [i["name"] for i in alice.get("/instances").json()] == ["half"]

    # bob waits for both GPUs; the free half of the half-used GPU is his line's now.
    line = create(bob, "both", gpu_count=2, queue=True)
    assert line["status"] == "queued" and line["queue_position"] == 1
    taken = post(alice, "/instances", image="debian-12", name="h2", gpu_model=MODEL, gpu_count=1, gpu_share="0.5")
    assert taken.status_code == 409, taken.text

    # A stopped share's start --queue is refused too; --gpus 1 --queue makes it a whole GPU that waits.
    alice.post(f"/instances/{half['id']}/stop").raise_for_status()
    wait_status(alice, half["id"], "stopped")
    refused = post(alice, f"/instances/{half['id']}/start", queue=True)
    assert refused.status_code == 400 and refused.json()["field"] == "queue", refused.text
    assert alice.get(f"/instances/{half['id']}").json()["status"] == "stopped"

    # The half's GPU is whole again, but bob's line needs 2: he waits, and alice's whole GPU behind him.
    resized = post(alice, f"/instances/{half['id']}/start", gpu_count=1, queue=True)
    assert resized.status_code == 200, resized.text
    assert resized.json()["status"] == "queued" and resized.json()["queue_position"] == 2
    assert resized.json()["gpu_share"] is None and resized.json()["gpu_count"] == 1

    # bob's own single GPU comes back: the dispatcher places his two, then nothing is left for alice.
    bob.post(f"/instances/{whole['id']}/stop").raise_for_status()
    started = wait_status(bob, line["id"], "running")
    assert gpus_of(bob, started) == [0, 1]
    assert alice.get(f"/instances/{half['id']}").json()["status"] == "queued"

    bob.delete(f"/instances/{line['id']}").raise_for_status()
    mine = wait_status(alice, half["id"], "running")
    assert len(mine["gpus"]) == 1 and mine["gpu_share"] is None
