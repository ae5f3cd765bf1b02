"""The catalog in the API, driver-aware placement, saved images, the image cache."""

import json
import time

import pytest

from tests.harness import BASE_IMAGE, Server, wait_status

ENTRY = """
[[image]]
name = "{name}"
ref = "{ref}"
framework = "pytorch"
framework_version = "2.9.1"
cuda = "{cuda}"
cudnn = "9.10"
python = "3.12"
os = "ubuntu-24.04"
min_driver = {driver}
default = {default}
description = "test entry"
build = {{ base_image = "ubuntu:24.04", python_version = "3.12", torch_version = "2.9.1", cuda_variant = "{variant}" }}
"""


@pytest.fixture(scope="module")
def old_driver_server(docker_client, tmp_path_factory):
    """Simulated GPUs on driver 550 (CUDA 12.4), a catalog with a CUDA 13 and a CUDA 12.8
    entry (both tagged locally so they count as built), and a CUDA 12.8 and a CUDA 13
    entry never built."""
    refs = {"cuda13": "dockyard-test/cuda13:1", "cuda12": "dockyard-test/cuda12:1"}
    for ref in refs.values():
        docker_client.images.get(BASE_IMAGE).tag(*ref.split(":"))
    catalog = tmp_path_factory.mktemp("catalog") / "catalog.toml"
    catalog.write_text(
        ENTRY.format(name="cuda13", ref=refs["cuda13"], cuda="13.0", driver=580, default="false", variant="cu130")
        + ENTRY.format(name="cuda12", ref=refs["cuda12"], cuda="12.8", driver=525, default="true", variant="cu128")
        + ENTRY.format(name="unbuilt", ref="dockyard-test/unbuilt:1", cuda="12.8", driver=525, default="false",
                       variant="cu128")
        + ENTRY.format(name="unbuilt13", ref="dockyard-test/unbuilt13:1", cuda="13.0", driver=580, default="false",
                       variant="cu130")
    )
    srv = Server(simulated_gpus="A100-80GB:2@550.54.15", catalog_path=str(catalog)).start()
    srv.admin = srv.add_user("ops", admin=True)
    srv.api = srv.add_user("dana")
    yield srv
    srv.close()
    for ref in refs.values():
        docker_client.images.remove(ref)


def test_catalog_is_listed_and_filtered_like_a_picker(old_driver_server):
    api = old_driver_server.api
    names = {i["name"]: i for i in api.get("/images").json()}
    assert names["cuda12"]["status"] == "ready" and names["cuda12"]["nodes"] == ["local"]
    assert names["cuda12"]["is_default"] and names["cuda12"]["min_driver"] == 525
    assert names["unbuilt"]["status"] == "absent" and names["unbuilt"]["nodes"] == []
    picked = api.get("/images", params={"framework": "pytorch", "cuda": "13.0"}).json()
    assert [i["name"] for i in picked] == ["cuda13", "unbuilt13"]
    assert api.get("/images", params={"python": "3.99"}).json() == []
    table = old_driver_server.cli("images", "--cuda", "12.8", token_of="dana", check=True).stdout
    assert "cuda12 (default)" in table and "cuda13" not in table


def test_market_shows_the_driver_and_its_cuda(old_driver_server):
    (row,) = old_driver_server.api.get("/gpus").json()
    assert (row["driver_version"], row["cuda_version"]) == ("550.54.15", "12.4")


def test_placement_refuses_a_cuda13_image_on_a_550_driver(old_driver_server):
    api = old_driver_server.api
    refused = api.post("/instances", json={"image": "cuda13", "gpu_count": 1})
    assert refused.status_code == 400
    detail = refused.json()["detail"]
    for words in ("550.54.15", "CUDA up to 12.4", "needs CUDA 13.0", "driver 580"):
        assert words in detail, detail
    assert api.get("/instances").json() == []

    placed = api.post("/instances", json={"image": "cuda12", "gpu_count": 1})
    assert placed.status_code == 201
    not_built = api.post("/instances", json={"image": "unbuilt", "gpu_count": 1})
    assert not_built.status_code == 409 and "not built yet" in not_built.json()["detail"]
    # The real reason first: no node's driver can ever run it, built or not.
    never = api.post("/instances", json={"image": "unbuilt13", "gpu_count": 1})
    assert never.status_code == 400 and "driver 580" in never.json()["detail"], never.json()
    api.delete(f"/instances/{placed.json()['id']}").raise_for_status()
    wait_status(api, placed.json()["id"], "released")


def test_saved_image_keeps_the_system_disk_not_the_data_disk(server, docker_client):
    alice, bob, admin = server.alice, server.bob, server.admin
    source = alice.post("/instances", json={"image": "debian-12", "gpu_count": 0, "name": "src"}).json()
    wait_status(alice, source["id"], "running")
    alice.post("/instances/src/exec", json={"command": [
        "sh", "-c", "echo tools > /root/env.txt && echo secret > /root/data/dataset.txt"]}).raise_for_status()
    alice.post("/instances/src/stop").raise_for_status()
    wait_status(alice, source["id"], "stopped")

    # Saving works while stopped, says the data disk is left out, shows the result.
    result = server.cli("images", "save", "src", "myenv:v1", token_of="alice")
    assert result.returncode == 0, result.stderr
    assert "/root/data is not included" in result.stdout and "ready" in result.stdout
    saved = alice.get("/images/myenv:v1").json()
    assert (saved["name"], saved["kind"], saved["public"]) == ("alice/myenv:v1", "saved", False)
    assert saved["size_bytes"] > 0 and saved["nodes"] == ["local"]

    again = alice.post("/instances/src/save", json={"name": "myenv:v1"})
    assert again.status_code == 409 and "already" in again.json()["detail"]
    bad = alice.post("/instances/src/save", json={"name": "My Env"})
    assert bad.status_code == 422

    clone = alice.post("/instances", json={"image": "myenv:v1", "gpu_count": 0}).json()
    wait_status(alice, clone["id"], "running")
    out = alice.post(f"/instances/{clone['id']}/exec", json={"command": [
        "sh", "-c", "cat /root/env.txt; ls /root/data"]}).json()["output"]
    assert out == "tools\n"  # the system disk came along; the data disk did not

    # Private until published; deleting an image in use is refused.
    assert bob.get("/images/alice/myenv:v1").status_code == 404
    assert bob.post("/instances", json={"image": "alice/myenv:v1", "gpu_count": 0}).status_code == 400
    assert alice.delete("/images/myenv:v1").status_code == 409
    admin.post("/images/alice/myenv:v1/publish").raise_for_status()
    assert bob.get("/images/alice/myenv:v1").json()["public"] is True

    # Releasing the source instance leaves the saved image alone.
    for key in (source["id"], clone["id"]):
        alice.delete(f"/instances/{key}").raise_for_status()
        wait_status(alice, key, "released")
    assert docker_client.images.get(saved["ref"])
    released = alice.post(f"/instances/{source['id']}/save", json={"name": "late"})
    assert released.status_code == 409 and "released" in released.json()["detail"]

    assert alice.delete("/images/myenv:v1").status_code == 204
    assert alice.get("/images/myenv:v1").status_code == 404
    assert not docker_client.images.list(name=saved["ref"].split(":")[0])


def test_saved_image_quota(docker_client):
    srv = Server(max_saved_images="2", max_saved_images_gb="0.05").start()
    try:
        srv.add_user("ops", admin=True).post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"})
        api = srv.add_user("erin")
        instance = api.post("/instances", json={"image": "debian-12", "gpu_count": 0}).json()
        wait_status(api, instance["id"], "running")
        assert api.post(f"/instances/{instance['id']}/save", json={"name": "one"}).status_code == 202
        for _ in range(100):
            if api.get("/images/one:latest").json()["status"] == "ready":
                break
            time.sleep(0.2)
        # The first image (136 MB) is over the 0.05 GB allowed: no second one.
        over = api.post(f"/instances/{instance['id']}/save", json={"name": "two"})
        assert over.status_code == 409 and "quota" in over.json()["detail"] and "GB" in over.json()["detail"]
    finally:
        srv.close()
    count_srv = Server(max_saved_images="1").start()
    try:
        count_srv.add_user("ops", admin=True).post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"})
        api = count_srv.add_user("erin")
        instance = api.post("/instances", json={"image": "debian-12", "gpu_count": 0}).json()
        wait_status(api, instance["id"], "running")
        assert api.post(f"/instances/{instance['id']}/save", json={"name": "one"}).status_code == 202
        over = api.post(f"/instances/{instance['id']}/save", json={"name": "two"})
        assert over.status_code == 409 and "the most allowed is 1" in over.json()["detail"]
    finally:
        count_srv.close()


def test_admin_prepares_images_on_nodes_with_progress(server):
    result = server.cli("admin", "images", "pull", "debian-12", token_of="root-admin")
    assert result.returncode == 0, result.stderr
    assert "[local]" in result.stdout and "ready on local" in result.stdout
    cache = json.loads(server.cli("admin", "images", "cache", "--json", token_of="root-admin", check=True).stdout)
    assert {"node": "local", "image": "debian-12"}.items() <= next(r for r in cache if r["image"] == "debian-12").items()
    missing = server.cli("admin", "images", "pull", "no-such-image", token_of="root-admin")
    assert missing.returncode == 1 and "not found" in missing.stderr
    denied = server.cli("admin", "images", "pull", "debian-12", token_of="alice")
    assert denied.returncode == 1 and "admin" in denied.stderr


def test_a_failed_save_leaves_no_image_row_and_says_why(server, docker_client):
    api = server.alice
    instance = api.post("/instances", json={"image": "debian-12", "gpu_count": 0}).json()
    wait_status(api, instance["id"], "running")
    api.post(f"/instances/{instance['id']}/stop").raise_for_status()
    wait_status(api, instance["id"], "stopped")
    docker_client.containers.get(f"dy-{server.deployment}-{instance['id']}").remove(force=True)
    assert api.post(f"/instances/{instance['id']}/save", json={"name": "doomed"}).status_code == 202
    for _ in range(300):
        if api.get("/images/doomed:latest").status_code == 404:
            break
        time.sleep(0.2)
    assert api.get("/images/doomed:latest").status_code == 404
    causes = [e["cause"] for e in api.get(f"/instances/{instance['id']}/events").json()]
    assert any(c.startswith("saving image alice/doomed:latest failed") for c in causes), causes
    api.delete(f"/instances/{instance['id']}").raise_for_status()
