"""200 concurrent creates never share a GPU."""

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.harness import BASE_IMAGE, Server, wait_status

POOL = 16


@pytest.fixture(scope="module")
def busy_server(docker_client):
    srv = Server(simulated_gpus=f"A100-80GB:{POOL}").start()
    admin = srv.add_user("ops", admin=True)
    admin.post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    srv.users = [srv.add_user(f"user{i}") for i in range(4)]
    yield srv
    srv.close()


def test_200_concurrent_creates_never_share_a_gpu(busy_server, docker_client):
    rng = random.Random(7)
    requests = [(busy_server.users[i % 4], rng.choice([1, 1, 2, 3])) for i in range(200)]

    def create(args):
        api, count = args
        return api, api.post("/instances", json={"image": "debian-12", "gpu_model": "A100-80GB", "gpu_count": count})

    with ThreadPoolExecutor(max_workers=200) as pool:
        results = list(pool.map(create, requests))

    created = [(api, r.json()) for api, r in results if r.status_code == 201]
    refused = [r for _, r in results if r.status_code != 201]
    assert all(r.status_code == 409 and "free" in r.json()["detail"] for r in refused), {r.text for r in refused}
    uuids = [g["uuid"] for _, instance in created for g in instance["gpus"]]
    assert len(uuids) == len(set(uuids)), "a GPU was assigned twice"
    assert len(uuids) <= POOL
    assert len(created) >= POOL // 3  # the pool was really used up, not refused wholesale
    assert sum(instance["gpu_count"] for _, instance in created) == len(uuids)

    # What the containers were given is as disjoint as what the database says.
    seen = []
    for api, instance in created:
        wait_status(api, instance["id"], "running", timeout=120)
        env = api.post(f"/instances/{instance['id']}/exec", json={"command": ["env"]}).json()["output"]
        visible = next(line for line in env.splitlines() if line.startswith("NVIDIA_VISIBLE_DEVICES="))
        seen += visible.split("=", 1)[1].split(",")
    assert sorted(seen) == sorted(uuids)

    for api, instance in created:
        api.delete(f"/instances/{instance['id']}").raise_for_status()
    for api, instance in created:
        wait_status(api, instance["id"], "released", timeout=120)
    market = busy_server.users[0].get("/gpus").json()
    assert market[0]["free"] == POOL
