"""Two Docker engines as two nodes: the market, placement across them, the lifecycle on
the remote one."""

import pytest

from tests.engines import SOCKET, clean_engine, second_engine
from tests.harness import BASE_IMAGE, Server, wait_status


@pytest.fixture(scope="module")
def two_nodes(docker_client, tmp_path_factory):
    engine2 = second_engine([BASE_IMAGE])
    srv = Server(simulated_gpus="A100-80GB:2")
    (srv.home / "config.toml").write_text(
        f'[[nodes]]\nname = "gpu2"\nurl = "{SOCKET}"\nsimulated_gpus = "RTX-4090:2@550.54.15"\n'
        "cpus_per_gpu = 1\nmemory_per_gpu_gb = 2\nplacement_policy = \"first-fit\"\n"
    )
    srv.start()
    srv.admin = srv.add_user("ops", admin=True)
    srv.admin.post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    srv.api = srv.add_user("gina")
    srv.engine2 = engine2
    yield srv
    srv.close()
    clean_engine(engine2)


def test_market_lists_both_nodes_with_their_drivers(two_nodes):
    rows = {(r["node"], r["model"]): r for r in two_nodes.api.get("/gpus").json()}
    assert set(rows) == {("local", "A100-80GB"), ("gpu2", "RTX-4090")}
    assert rows[("gpu2", "RTX-4090")]["driver_version"] == "550.54.15"
    assert rows[("gpu2", "RTX-4090")]["cuda_version"] == "12.4"
    nodes = {n["name"]: n for n in two_nodes.admin.get("/nodes").json()}
    assert nodes["gpu2"]["online"] and nodes["gpu2"]["cpus_per_gpu"] == 1
    assert nodes["gpu2"]["memory_per_gpu_bytes"] == 2 * 1024**3
    # each node is in the pool of its own placement_policy; local has the server's default
    assert (nodes["local"]["placement_policy"], nodes["gpu2"]["placement_policy"]) == ("dockyard", "first-fit")


def test_an_instance_lives_on_the_node_that_holds_its_gpus(two_nodes):
    api, engine2 = two_nodes.api, two_nodes.engine2
    created = api.post("/instances", json={"image": "debian-12", "gpu_model": "RTX-4090", "gpu_count": 2}).json()
    assert created["node"] == "gpu2"
    wait_status(api, created["id"], "running")
    name = f"dy-{two_nodes.deployment}-{created['id']}"
    container = engine2.containers.get(name)
    assert container.attrs["HostConfig"]["NanoCpus"] == 2 * 10**9
    assert container.attrs["HostConfig"]["Memory"] == 4 * 1024**3
    api.post(f"/instances/{created['id']}/exec", json={"command": ["sh", "-c", "echo x > /root/data/f"]})

    api.post(f"/instances/{created['id']}/stop").raise_for_status()
    wait_status(api, created["id"], "stopped")
    api.post(f"/instances/{created['id']}/start", json={"no_gpu": True}).raise_for_status()
    started = wait_status(api, created["id"], "running")
    assert started["node"] == "gpu2"  # same node, same disks
    out = api.post(f"/instances/{created['id']}/exec", json={"command": ["cat", "/root/data/f"]}).json()
    assert out["output"] == "x\n"

    api.delete(f"/instances/{created['id']}").raise_for_status()
    wait_status(api, created["id"], "released")
    assert not engine2.containers.list(all=True, filters={"name": name})


def test_a_volume_places_its_instance_on_its_node(two_nodes):
    api = two_nodes.api
    made = api.post("/volumes", json={"name": "far", "size_gb": 1, "node": "gpu2"})
    assert made.status_code == 201, made.text
    # GPUs asked for on the other node: refused, naming the volume's node; nothing made.
    refused = api.post("/instances", json={"image": "debian-12", "gpu_model": "A100-80GB", "gpu_count": 1,
                                           "volumes": ["far"]})
    assert refused.status_code == 409 and "volume far is on node gpu2" in refused.json()["detail"], refused.text
    assert api.get("/volumes/far").json()["instance"] is None
    placed = api.post("/instances", json={"image": "debian-12", "gpu_count": 1, "volumes": ["far"]}).json()
    assert placed["node"] == "gpu2"
    wait_status(api, placed["id"], "running")
    out = api.post(f"/instances/{placed['id']}/exec", json={"command": ["sh", "-c", "df -B1 --output=size /root/data"]})
    assert int(out.json()["output"].split()[-1]) >= 1024**3
    api.delete(f"/instances/{placed['id']}").raise_for_status()
    wait_status(api, placed["id"], "released")
    assert api.delete("/volumes/far").status_code == 200
