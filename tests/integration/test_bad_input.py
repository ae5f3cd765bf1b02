"""Bad input is refused with a 4xx that names the problem, and nothing is created."""

import pytest

from tests.harness import wait_status


def nothing_created(server, docker_client):
    """No live instance and no container: every test here releases what it made."""
    assert [i for i in server.alice.get("/instances", params={"all": True}).json() if i["status"] != "released"] == []
    label = {"label": f"dockyard.deployment={server.deployment}"}
    assert docker_client.containers.list(all=True, filters=label) == []


def release(api, instance_id):
    api.delete(f"/instances/{instance_id}").raise_for_status()
    wait_status(api, instance_id, "released")


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"image": "no-such-image"}, 400, ["image", "no-such-image"]),
        ({"image": "debian-12", "gpu_model": "H900"}, 400, ["gpu_model", "H900", "A100-80GB"]),
        ({"image": "debian-12", "gpu_model": "A100-80GB", "gpu_count": 5}, 400, ["gpu_count", "at most 4"]),
        ({"image": "debian-12", "gpu_count": -1}, 422, ["gpu_count"]),
        ({"image": "debian-12", "data_disk_gb": -5}, 422, ["data_disk_gb"]),
        ({"image": "debian-12", "name": "a;rm -rf /"}, 422, ["name"]),
        ({"image": "debian-12", "name": "../etc"}, 422, ["name"]),
        ({"image": "debian-12", "name": "$(reboot)"}, 422, ["name"]),
        ({"image": "debian-12", "env": {"1BAD": "x"}}, 422, ["env", "1BAD"]),
        ({"image": "debian-12", "env": {"A-B": "x"}}, 422, ["env", "A-B"]),
        ({"image": "debian-12", "surprise": 1}, 422, ["surprise"]),
        ({"gpu_count": 1}, 422, ["image"]),
    ],
)
def test_create_refuses_bad_input(server, docker_client, body, status, words):
    response = server.alice.post("/instances", json=body)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    for word in words:
        assert word in detail, detail
    nothing_created(server, docker_client)


def test_gpu_count_above_a_single_node_with_any_model(server, docker_client):
    # 3 of "any" model: no node holds 3 RTX-4090 but 4 A100 fits, so it is placed...
    response = server.alice.post("/instances", json={"image": "debian-12", "gpu_count": 3})
    assert response.status_code == 201 and response.json()["gpu_model"] == "A100-80GB"
    release(server.alice, response.json()["id"])


def test_oversized_body_is_refused(server, docker_client):
    huge = {"image": "debian-12", "env": {"BIG": "x" * 8000, **{f"V{i}": "y" * 4000 for i in range(100)}}}
    response = server.alice.post("/instances", json=huge)
    assert response.status_code == 413 and "too large" in response.json()["detail"]
    nothing_created(server, docker_client)


def test_cannot_place_now_says_how_many_are_free(server, docker_client):
    first = server.bob.post("/instances", json={"image": "debian-12", "gpu_model": "RTX-4090", "gpu_count": 2})
    assert first.status_code == 201
    response = server.alice.post("/instances", json={"image": "debian-12", "gpu_model": "RTX-4090", "gpu_count": 1})
    assert response.status_code == 409
    assert "asked for 1, 0 free" in response.json()["detail"]
    nothing_created(server, docker_client)
    release(server.bob, first.json()["id"])


def test_cli_errors_are_one_readable_line(server):
    result = server.cli("create", "--image", "debian-12", "--gpu-model", "H900", token_of="alice")
    assert result.returncode == 1
    assert result.stderr.startswith("error: gpu_model: unknown GPU model 'H900'")
    assert len(result.stderr.strip().splitlines()) == 1
    bad_env = server.cli("create", "--image", "debian-12", "--env", "NOVALUE", token_of="alice")
    assert bad_env.returncode == 1 and "NAME=VALUE" in bad_env.stderr
    unknown = server.cli("show", "nope", token_of="alice")
    assert unknown.returncode == 1 and "not found" in unknown.stderr


def test_duplicate_name_is_refused(server, docker_client):
    body = {"image": "debian-12", "gpu_count": 0, "name": "twin"}
    first = server.alice.post("/instances", json=body)
    assert first.status_code == 201
    again = server.alice.post("/instances", json=body)
    assert again.status_code == 409 and "twin" in again.json()["detail"]
    # Another user may use the same name.
    other = server.bob.post("/instances", json=body)
    assert other.status_code == 201
    release(server.alice, first.json()["id"])
    release(server.bob, other.json()["id"])
