"""Clone against a real server and Docker engine: both disks copied, the clone's
own secrets, the source untouched; refusals that leave nothing behind. And the audit log:
an admin's actions are recorded and readable by admins only."""

import time

import httpx
import pytest

from tests.harness import wait_status

pytestmark = pytest.mark.docker


def run(api, key: str, script: str) -> tuple[int, str]:
    out = api.post(f"/instances/{key}/exec", json={"command": ["sh", "-c", script]})
    out.raise_for_status()
    return out.json()["exit_code"], out.json()["output"]


def wait_operation(api, op: dict, timeout: float = 120) -> list[dict]:
    """Every distinct view of the operation until it ends."""
    seen = [op]
    deadline = time.monotonic() + timeout
    while not seen[-1]["done"] and time.monotonic() < deadline:
        time.sleep(0.1)
        view = api.get(f"/operations/{op['id']}").json()
        if view != seen[-1]:
            seen.append(view)
    assert seen[-1]["done"], seen[-1]
    return seen


def engine_objects(docker_client, deployment: str) -> tuple[set, set, set]:
    label = {"label": f"dockyard.deployment={deployment}"}
    return ({c.name for c in docker_client.containers.list(all=True, filters=label)},
            {v.name for v in docker_client.volumes.list(filters=label)},
            {t for i in docker_client.images.list(filters=label) for t in i.tags})


def container_env(docker_client, deployment: str, instance_id: str) -> dict:
    env = docker_client.containers.get(f"dy-{deployment}-{instance_id}").attrs["Config"]["Env"]
    return dict(e.split("=", 1) for e in env)


def test_a_clone_has_both_disks_its_own_secrets_and_leaves_the_source_alone(server, docker_client):
    api = server.alice
    source = api.post("/instances", json={"image": "debian-12", "gpu_model": "A100-80GB", "gpu_count": 2,
                                          "name": "orig", "ssh_password": True, "env": {"COLOUR": "blue"}}).json()
    wait_status(api, source["id"], "running")
    assert run(api, source["id"], "echo hello > /root/hello && echo data > /root/data/x") == (0, "")
    api.post(f"/instances/{source['id']}/ports", json={"port": 6006}).raise_for_status()
    api.post(f"/instances/{source['id']}/ports/6006/share").raise_for_status()

    answer = api.post(f"/instances/{source['id']}/clone", json={"name": "copy"})
    assert answer.status_code == 202, answer.text
    clone, op = answer.json()["instance"], answer.json()["operation"]
    password = clone["ssh_password"]
    assert (clone["name"], clone["status"], clone["node"]) == ("copy", "creating", source["node"])
    assert (clone["gpu_model"], clone["gpu_count"], clone["env"]) == ("A100-80GB", 2, {"COLOUR": "blue"})
    assert op["kind"] == "clone" and op["instance_id"] == clone["id"]
    views = wait_operation(api, op)
    assert views[-1]["error"] is None and views[-1]["percent"] == 100
    percents = [v["percent"] or 0 for v in views]
    assert percents == sorted(percents)
    clone = wait_status(api, clone["id"], "running")
    assert len(clone["gpus"]) == 2 and not {g["uuid"] for g in clone["gpus"]} & {
        g["uuid"] for g in api.get(f"/instances/{source['id']}").json()["gpus"]}

    # Both disks were copied; the copies are the clone's own.
    assert run(api, clone["id"], "cat /root/hello /root/data/x") == (0, "hello\ndata\n")
    assert run(api, clone["id"], "echo mine > /root/data/y && echo changed > /root/hello")[0] == 0
    assert run(api, source["id"], "cat /root/hello; ls /root/data") == (0, "hello\nx\n")

    # Its own SSH port, password and JupyterLab token; no ports, no share links.
    assert clone["ssh_command"] != source["ssh_command"]
    assert password and password != source["ssh_password"] and clone["ssh_password"] is None  # shown once
    source_env = container_env(docker_client, server.deployment, source["id"])
    clone_env = container_env(docker_client, server.deployment, clone["id"])
    assert clone_env["DOCKYARD_JUPYTER_TOKEN"] != source_env["DOCKYARD_JUPYTER_TOKEN"]
    assert clone_env["DOCKYARD_SSH_PASSWORD"] == password
    assert api.get(f"/instances/{clone['id']}/ports").json() == []
    events = [e["cause"] for e in api.get(f"/instances/{clone['id']}/events").json()]
    assert events[0] == "cloned by alice from instance orig"

    # The source still works; the CLI clones too, here without GPUs.
    assert api.get(f"/instances/{source['id']}").json()["status"] == "running"
    result = server.cli("clone", "orig", "--name", "cpu-copy", "--gpus", "0", "--wait", token_of="alice")
    assert result.returncode == 0, result.stderr
    cpu_copy = api.get("/instances/cpu-copy").json()
    assert cpu_copy["status"] == "running" and cpu_copy["gpus"] == []
    assert run(api, "cpu-copy", "cat /root/data/x") == (0, "data\n")

    # Released with --delete-data, a clone takes its copies with it; the source keeps its own.
    before = engine_objects(docker_client, server.deployment)
    for instance in (clone, cpu_copy):
        api.delete(f"/instances/{instance['id']}", params={"delete_data": True}).raise_for_status()
        wait_status(api, instance["id"], "released")
    _, volumes, images = engine_objects(docker_client, server.deployment)
    assert f"dy-{server.deployment}-{source['id']}-data" in volumes
    assert not {v for v in before[1] - volumes if source["id"] in v}
    assert not [v for v in volumes if clone["id"] in v or cpu_copy["id"] in v]
    assert not [t for t in images if clone["id"] in t or cpu_copy["id"] in t]
    assert run(api, source["id"], "cat /root/data/x") == (0, "data\n")
    api.delete(f"/instances/{source['id']}").raise_for_status()
    wait_status(api, source["id"], "released")


def test_clones_refused_for_others_and_bad_input_leave_nothing(server, docker_client):
    api = server.alice
    source = api.post("/instances", json={"image": "debian-12", "gpu_model": "RTX-4090", "gpu_count": 1,
                                          "name": "keep"}).json()
    wait_status(api, source["id"], "running")
    before = engine_objects(docker_client, server.deployment)
    listed = {i["id"] for i in api.get("/instances", params={"all": True}).json()}

    assert server.bob.post(f"/instances/{source['id']}/clone", json={"name": "stolen"}).status_code == 404
    assert server.bob.post("/instances/keep/clone", json={"name": "stolen"}).status_code == 404
    refusals = {
        "bad name": ({"name": "no spaces!"}, 422, "name"),
        "taken name": ({"name": "keep"}, 409, "already have an instance named 'keep'"),
        "over the node": ({"name": "big", "gpu_count": 3}, 400, "gpu_count: 3 is more than any node holds"),
        "not free": ({"name": "big", "gpu_count": 2}, 409, "a clone must be on node local"),
        "over the limit": ({"name": "big", "gpu_count": 65}, 422, "gpu_count"),
        "no name": ({}, 422, "name"),
    }
    # Two RTX-4090s on the node, one held by the source: two more cannot be free.
    for what, (body, code, words) in refusals.items():
        refused = api.post(f"/instances/{source['id']}/clone", json=body)
        assert refused.status_code == code, (what, refused.text)
        assert words in refused.json()["detail"], (what, refused.json())
    assert api.post("/instances/nothing-here/clone", json={"name": "x"}).status_code == 404

    assert {i["id"] for i in api.get("/instances", params={"all": True}).json()} == listed
    assert not [op for op in api.get("/operations").json() if op["target"] in ("stolen", "big", "keep")]
    assert engine_objects(docker_client, server.deployment) == before
    api.delete(f"/instances/{source['id']}").raise_for_status()
    wait_status(api, source["id"], "released")


def test_a_stopped_instance_clones_and_a_released_one_does_not(server):
    api = server.alice
    source = api.post("/instances", json={"image": "debian-12", "gpu_count": 0, "name": "sleepy"}).json()
    wait_status(api, source["id"], "running")
    run(api, source["id"], "echo zz > /root/data/z")
    api.post(f"/instances/{source['id']}/stop").raise_for_status()
    wait_status(api, source["id"], "stopped")
    answer = api.post(f"/instances/{source['id']}/clone", json={"name": "awake"}).json()
    wait_operation(api, answer["operation"])
    clone = wait_status(api, answer["instance"]["id"], "running")
    assert run(api, clone["id"], "cat /root/data/z") == (0, "zz\n")
    assert api.get(f"/instances/{source['id']}").json()["status"] == "stopped"
    for instance in (clone, source):
        api.delete(f"/instances/{instance['id']}").raise_for_status()
        wait_status(api, instance["id"], "released")
    gone = api.post(f"/instances/{source['id']}/clone", json={"name": "ghost"})
    assert gone.status_code in (404, 409), gone.text


def test_admin_actions_are_audited_and_only_admins_read_the_log(server):
    admin = server.admin
    admin.post("/billing/prices", json={"kind": "gpu", "model": "RTX-4090", "price": "2.5"}).raise_for_status()
    admin.post("/billing/credit", json={"user": "bob", "amount": "12"}).raise_for_status()
    assert server.cli("admin", "images", "pull", "debian-12", token_of="root-admin").returncode == 0
    log = admin.get("/admin/audit").json()
    found = {(e["action"], e["actor"], e["target"]) for e in log["entries"]}
    assert {("price.set", "root-admin", "gpu RTX-4090"), ("wallet.recharge", "root-admin", "bob"),
            ("image.pull", "root-admin", "debian-12"), ("image.register", "root-admin", "debian-12")} <= found
    assert ("user.create", "alice") in {(e["action"], e["target"]) for e in log["entries"]}
    newest = [e["at"] for e in log["entries"]]
    assert newest == sorted(newest, reverse=True) and log["total"] >= len(log["entries"])
    prices = admin.get("/admin/audit", params={"action": "price.set"}).json()
    assert prices["total"] >= 1 and {e["action"] for e in prices["entries"]} == {"price.set"}
    assert "2.5000" in prices["entries"][0]["detail"]
    page = admin.get("/admin/audit", params={"limit": 1, "offset": 1}).json()
    assert len(page["entries"]) == 1 and page["entries"][0] == log["entries"][1]

    # An admin opening another user's JupyterLab is logged too (a debian instance has none:
    # the proxy answers an error, but the decision to let the admin in is recorded).
    instance = server.alice.post("/instances", json={"image": "debian-12", "gpu_count": 0}).json()
    wait_status(server.alice, instance["id"], "running")
    httpx.get(f"{server.instance_url(instance['id'])}/instances/{instance['id']}/jupyter/api/status",
              headers={"Authorization": f"Bearer {server.tokens['root-admin']}"}, timeout=30)
    opened = admin.get("/admin/audit", params={"action": "instance.open"}).json()["entries"]
    assert [(e["actor"], e["target"], e["detail"]) for e in opened] == [
        ("root-admin", f"alice/{instance['name']} ({instance['id']})", "opened JupyterLab")]
    server.alice.delete(f"/instances/{instance['id']}").raise_for_status()

    # Others are refused, as everywhere in the admin API; a refused change is not logged.
    assert server.alice.get("/admin/audit").status_code == 403
    assert server.client().get("/admin/audit").status_code == 401
    assert server.alice.post("/billing/prices", json={"kind": "gpu", "model": "RTX-4090", "price": "0"}).status_code == 403
    assert admin.post("/billing/prices", json={"kind": "gpu", "model": "H900", "price": "1"}).status_code == 400
    assert admin.get("/admin/audit", params={"action": "price.set"}).json()["total"] == prices["total"]
