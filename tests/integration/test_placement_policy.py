"""The placement_policy setting decides real placements: on the same books (one GPU free, one
half rented), first-fit cuts the free GPU for a new half, dockyard (the default) and best-fit
fill the half-used one."""

from __future__ import annotations

import pytest

from tests.harness import BASE_IMAGE, Server, wait_status


def gpu_of(api, instance_id: str) -> str:
    (gpu,) = wait_status(api, instance_id, "running")["gpus"]
    return gpu["index"]


def create(api, **body) -> str:
    answer = api.post("/instances", json={"image": "debian-12", **body})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


@pytest.mark.parametrize("policy, second_half_on", [("first-fit", 0), ("dockyard", 1), ("best-fit", 1)])
def test_the_policy_setting_changes_where_a_share_goes(docker_client, policy, second_half_on):
    server = Server(simulated_gpus="RTX-4090:2", gpu_sharing="mps:2", placement_policy=policy).start()
    try:
        admin = server.add_user("root-admin", admin=True)
        admin.post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
        alice = server.add_user("alice")
        whole = create(alice, gpu_count=1, name="whole")
        assert gpu_of(alice, whole) == 0
        half = create(alice, gpu_share="0.5", name="half-1")
        assert gpu_of(alice, half) == 1
        alice.delete(f"/instances/{whole}").raise_for_status()
        wait_status(alice, whole, "released")
        # GPU 0 free, GPU 1 half rented: the policy decides
        second = create(alice, gpu_share="0.5", name="half-2")
        assert gpu_of(alice, second) == second_half_on
        for instance in (half, second):
            alice.delete(f"/instances/{instance}").raise_for_status()
            wait_status(alice, instance, "released")
    finally:
        server.close()
