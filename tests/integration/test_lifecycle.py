"""Create, stop, start (with and without GPUs), release: against the real Docker engine."""

import json


from tests.harness import BASE_IMAGE, Server, wait_status


def market(api) -> dict:
    return {(r["node"], r["model"]): r for r in api.get("/gpus").json()}


def container_of(docker_client, server, instance_id):
    name = f"dy-{server.deployment}-{instance_id}"
    return docker_client.containers.get(name)


def run(server, user, instance, script):
    result = server.cli("exec", instance, "--", "sh", "-c", script, token_of=user)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_full_lifecycle_keeps_both_disks(server, docker_client):
    result = server.cli("create", "--image", "debian-12", "--gpu-model", "A100-80GB", "--gpus", "2",
                        "--name", "life", "--env", "GREETING=hello", "--wait", "--json", token_of="alice")
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["status"] == "running"
    assert [g["model"] for g in created["gpus"]] == ["A100-80GB", "A100-80GB"]
    uuids = [g["uuid"] for g in created["gpus"]]
    assert market(server.alice)[("local", "A100-80GB")]["free"] == 2

    # The container sees exactly its GPUs, its env, and runs hardened.
    env = run(server, "alice", "life", "env")
    assert f"NVIDIA_VISIBLE_DEVICES={','.join(uuids)}" in env
    assert f"DOCKYARD_GPU_UUIDS={','.join(uuids)}" in env
    assert "GREETING=hello" in env
    attrs = container_of(docker_client, server, created["id"]).attrs
    host = attrs["HostConfig"]
    assert host["Privileged"] is False
    assert host["NanoCpus"] > 0 and host["Memory"] > 0 and host["PidsLimit"] > 0
    assert host["ShmSize"] >= 1024**3
    assert not any("docker.sock" in (m.get("Source") or "") for m in attrs["Mounts"])
    assert any(m["Destination"] == "/root/data" and m["Type"] == "volume" for m in attrs["Mounts"])

    run(server, "alice", "life", "echo data-disk > /root/data/keep.txt && echo sys-disk > /root/sys.txt")

    assert server.cli("stop", "life", "--wait", token_of="alice").returncode == 0
    assert market(server.alice)[("local", "A100-80GB")]["free"] == 4
    assert server.alice.get("/instances/life").json()["gpus"] == []

    # No-GPU start: a new container over the same system disk, without GPUs.
    result = server.cli("start", "life", "--no-gpu", "--wait", "--json", token_of="alice")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["gpus"] == []
    assert run(server, "alice", "life", "cat /root/data/keep.txt /root/sys.txt") == "data-disk\nsys-disk\n"
    assert "NVIDIA_VISIBLE_DEVICES=void" in run(server, "alice", "life", "env")
    assert market(server.alice)[("local", "A100-80GB")]["free"] == 4

    # Back with GPUs: the files are still on both disks.
    server.cli("stop", "life", "--wait", token_of="alice", check=True)
    started = json.loads(server.cli("start", "life", "--wait", "--json", token_of="alice", check=True).stdout)
    assert len(started["gpus"]) == 2
    assert run(server, "alice", "life", "cat /root/data/keep.txt /root/sys.txt") == "data-disk\nsys-disk\n"

    events = [(e["from_status"], e["to_status"]) for e in server.alice.get("/instances/life/events").json()]
    assert events == [
        (None, "creating"), ("creating", "running"),
        ("running", "stopping"), ("stopping", "stopped"), ("stopped", "starting"), ("starting", "running"),
        ("running", "stopping"), ("stopping", "stopped"), ("stopped", "starting"), ("starting", "running"),
    ]

    # Release removes the container and saved system disks, keeps the data disk as a
    # volume (docs/volumes.md); GPUs come back.
    refused = server.cli("rm", "life", token_of="alice")
    assert refused.returncode != 0 and "--yes" in refused.stderr
    server.cli("rm", "life", "--yes", "--wait", token_of="alice", check=True)
    label = {"label": f"dockyard.instance={created['id']}"}
    assert docker_client.containers.list(all=True, filters=label) == []
    assert [v.name for v in docker_client.volumes.list(filters=label)] == [f"dy-{server.deployment}-{created['id']}-data"]
    assert docker_client.images.list(filters=label) == []
    server.cli("volumes", "rm", "life", "--yes", token_of="alice", check=True)
    assert docker_client.volumes.list(filters=label) == []
    assert market(server.alice)[("local", "A100-80GB")]["free"] == 4
    assert server.alice.get("/instances/life").status_code == 404


def test_start_refused_when_gpus_are_taken_then_no_gpu_works(server):
    alice, bob = server.alice, server.bob
    first = alice.post("/instances", json={"image": "debian-12", "gpu_model": "RTX-4090", "gpu_count": 2}).json()
    wait_status(alice, first["id"], "running")
    alice.post(f"/instances/{first['id']}/stop").raise_for_status()
    wait_status(alice, first["id"], "stopped")

    other = bob.post("/instances", json={"image": "debian-12", "gpu_model": "RTX-4090", "gpu_count": 1}).json()
    refused = alice.post(f"/instances/{first['id']}/start")
    assert refused.status_code == 409
    assert "only 1 RTX-4090 GPUs are free" in refused.json()["detail"]
    assert alice.get(f"/instances/{first['id']}").json()["status"] == "stopped"

    alice.post(f"/instances/{first['id']}/start", json={"no_gpu": True}).raise_for_status()
    assert wait_status(alice, first["id"], "running")["gpus"] == []
    for api, instance in ((alice, first), (bob, other)):
        api.delete(f"/instances/{instance['id']}").raise_for_status()
        wait_status(api, instance["id"], "released")


def test_start_command_logs_exec_and_exit(server):
    api = server.alice
    created = api.post("/instances", json={
        "image": "debian-12", "gpu_count": 0, "name": "chatty",
        "command": "echo started-$DOCKYARD_INSTANCE_NAME; exec sleep infinity",
    }).json()
    wait_status(api, created["id"], "running")
    logs = server.cli("logs", "chatty", token_of="alice", check=True).stdout
    assert "started-chatty" in logs
    failing = server.cli("exec", "chatty", "--", "sh", "-c", "echo out; exit 3", token_of="alice")
    assert failing.returncode == 3 and failing.stdout == "out\n"

    # A command that ends stops the instance and returns its GPUs (nobody pays for idle).
    ending = api.post("/instances", json={"image": "debian-12", "gpu_model": "A100-80GB", "gpu_count": 1,
                                          "command": "sleep 1; exit 7"}).json()
    stopped = wait_status(api, ending["id"], "stopped", timeout=30)
    assert stopped["gpus"] == []
    causes = [e["cause"] for e in api.get(f"/instances/{ending['id']}/events").json()]
    assert any("exit code 7" in c for c in causes)
    for instance in (created, ending):
        api.delete(f"/instances/{instance['id']}").raise_for_status()


def test_listings_take_json(server):
    for verb in (["gpus"], ["images"], ["ls"], ["ls", "--all"]):
        result = server.cli(*verb, "--json", token_of="alice", check=True)
        assert isinstance(json.loads(result.stdout), list)
    gpus = json.loads(server.cli("gpus", "--json", token_of="alice").stdout)
    assert {(g["model"], g["total"], g["simulated"]) for g in gpus} == {("A100-80GB", 4, True), ("RTX-4090", 2, True)}
    assert all(g["driver_version"] and g["cuda_version"] for g in gpus)
    table = server.cli("gpus", token_of="alice", check=True).stdout
    assert "simulated" in table and "A100-80GB" in table


def test_a_system_disk_with_too_many_layers_is_squashed_and_kept(docker_client):
    srv = Server(max_sysdisk_layers="1").start()
    try:
        srv.add_user("ops", admin=True).post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"})
        api = srv.add_user("lee")
        created = api.post("/instances", json={"image": "debian-12", "gpu_count": 1, "name": "deep"}).json()
        wait_status(api, created["id"], "running")
        api.post("/instances/deep/exec", json={"command": ["sh", "-c", "echo kept > /root/sys.txt"]})
        for no_gpu in (True, False):  # each start on other GPUs saves the system disk
            api.post("/instances/deep/stop").raise_for_status()
            wait_status(api, created["id"], "stopped")
            api.post("/instances/deep/start", json={"no_gpu": no_gpu}).raise_for_status()
            wait_status(api, created["id"], "running")
        out = api.post("/instances/deep/exec", json={"command": ["cat", "/root/sys.txt"]}).json()["output"]
        assert out == "kept\n"
        container = docker_client.containers.get(f"dy-{srv.deployment}-{created['id']}")
        image = docker_client.images.get(container.attrs["Config"]["Image"])
        assert len(image.attrs["RootFS"]["Layers"]) == 1 and "-flat" in image.tags[0]
    finally:
        srv.close()
