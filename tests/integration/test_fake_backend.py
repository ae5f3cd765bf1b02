"""DOCKYARD_RUNTIME=fake: the whole server, CLI and console with no Docker engine at all
(its socket points nowhere), for demos and UI work."""

import json
import os
import re

import httpx
import pytest

from tests.harness import Server, wait_status


@pytest.fixture(scope="module")
def srv():
    server = Server(runtime="fake", docker_url="unix:///nonexistent/docker.sock", simulated_gpus="").start()
    yield server
    server.stop()


def test_an_instance_lives_its_whole_life_on_the_fake_backend(srv):
    api = srv.add_user("dana")
    made = srv.cli("create", "--image", "pytorch-2.13-cpu", "--gpus", "1", "--gpu-model", "A100-80GB", "--wait",
                   "--json", token_of="dana", timeout=60)
    assert made.returncode == 0, made.stderr
    instance = json.loads(made.stdout)
    assert instance["status"] == "running" and instance["node"] == "local" and len(instance["gpus"]) == 1
    ran = api.post(f"/instances/{instance['id']}/exec", json={"command": ["sh", "-c", "echo hello"]})
    assert ran.status_code == 200 and ran.json()["output"] == "hello\n"

    api.post(f"/instances/{instance['id']}/stop").raise_for_status()
    wait_status(api, instance["id"], "stopped")
    # What the backend cannot do is refused with its reason, and nothing changes.
    moved = api.post(f"/instances/{instance['id']}/migrate", json={"node": "local"})
    assert moved.status_code == 409 and "keeps its disks in memory" in moved.json()["detail"], moved.text
    assert api.get(f"/instances/{instance['id']}").json()["status"] == "stopped"
    volume = api.post("/volumes", json={"name": "scratch", "size_gb": 10})
    assert volume.status_code == 201, volume.text
    grown = api.post("/volumes/scratch/resize", json={"size_gb": 20})
    assert grown.status_code == 409 and "no size enforced" in grown.json()["detail"], grown.text
    assert api.get("/volumes/scratch").json()["size_gb"] == 10
    api.post(f"/instances/{instance['id']}/start", json={}).raise_for_status()
    assert wait_status(api, instance["id"], "running")["status"] == "running"
    listed = srv.cli("ls", "--json", token_of="dana", check=True).stdout
    assert [i["id"] for i in json.loads(listed)] == [instance["id"]]
    api.delete(f"/instances/{instance['id']}").raise_for_status()
    assert wait_status(api, instance["id"], "released")["status"] == "released"


def test_the_market_and_the_console_work_on_the_fake_backend(srv):
    api = srv.add_user("erin")
    market = {row["model"]: row["total"] for row in api.get("/gpus").json()}
    assert market == {"A100-80GB": 4, "RTX-4090": 4}  # the fake node's own GPUs (runtimes/fake.py)
    http = httpx.Client(base_url=srv.url, follow_redirects=False, timeout=60)
    csrf = re.search(r'name="csrf" value="([^"]+)"', http.get("/login").text).group(1)
    assert http.post("/login", data={"user": "erin", "password": "correct-horse", "csrf": csrf}).status_code == 303
    page = http.get("/instances")
    assert page.status_code == 200 and "A100-80GB" in http.get("/market").text


def test_a_cluster_runs_on_the_fake_backend(srv):
    srv.add_user("finn")
    made = srv.cli("cluster", "create", "--name", "pair", "--nodes", "2", "--gpus", "1", "--gpu-model", "RTX-4090",
                   "--image", "pytorch-2.13-cpu", "--wait", "--json", token_of="finn", timeout=60)
    assert made.returncode == 0, made.stderr
    cluster = json.loads(made.stdout)
    assert cluster["status"] == "running" and [m["status"] for m in cluster["members"]] == ["running", "running"]
    gone = srv.cli("cluster", "rm", "pair", "--yes", "--wait", "--json", token_of="finn", timeout=60)
    assert gone.returncode == 0, gone.stderr


def test_a_sigterm_stops_the_server_cleanly_and_removes_its_socket_folder():
    server = Server(runtime="fake", docker_url="unix:///nonexistent/docker.sock", simulated_gpus="").start()
    try:
        socket = re.search(r"Uvicorn running on unix socket (\S+)", server.log()).group(1)
        assert os.path.exists(socket)
        server.stop()  # SIGTERM, as a service manager stops it
        assert server.process.returncode == 0, server.log()[-2000:]
        assert not os.path.exists(os.path.dirname(socket))
        assert "Application shutdown complete" in server.log()
    finally:
        server.close()
