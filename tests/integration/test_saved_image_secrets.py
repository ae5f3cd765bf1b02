"""A saved image keeps the system disk's files, not what made it its author's instance:
environment values (secret ones too), the SSH password, host keys. Another user's instance of it gets its
own host keys and never the author's password."""

import time

import pytest

from dockyard.core.catalog import find, load_catalog

from tests.harness import Server, wait_status

IMAGE = "pytorch-2.13-cpu"
SECRET = "hunter2-not-for-you"
SEALED = "hf_sealed-secret-env-value"  # a --secret-env value


@pytest.fixture(scope="module")
def srv(docker_client, pytorch_image):
    server = Server().start()
    server.admin = server.add_user("ops", admin=True)
    server.alice, server.bob = server.add_user("alice"), server.add_user("bob")
    yield server
    server.close()


def inside(api, key, script):
    return api.post(f"/instances/{key}/exec", json={"command": ["bash", "-c", script]}, timeout=120).json()["output"]


def files_of(docker_client, ref, script):
    container = docker_client.containers.run(ref, ["-c", script], entrypoint=["/bin/bash"], detach=True,
                                             network_mode="none")
    try:
        container.wait(timeout=60)
        return container.logs().decode()
    finally:
        container.remove(force=True)


def test_saved_image_carries_no_secrets(srv, docker_client):
    alice, bob = srv.alice, srv.bob
    made = alice.post("/instances", json={"image": IMAGE, "gpu_count": 0, "name": "author", "ssh_password": True,
                                          "env": {"API_KEY": SECRET},
                                          "secret_env": {"HF_TOKEN": SEALED}}).json()
    password = made["ssh_password"]
    wait_status(alice, made["id"], "running", timeout=180)
    # sshd starts once its keys and the password are in place (JupyterLab starts meanwhile).
    host_key = inside(alice, made["id"], "for i in $(seq 60); do pgrep -x sshd >/dev/null && break; "
                                         "sleep 1; done; cat /etc/ssh/ssh_host_ed25519_key.pub")
    assert host_key.startswith("ssh-ed25519")
    assert inside(alice, made["id"], "echo keep-me > /root/work.txt; grep -c '^root:[^*!]' /etc/shadow").strip() == "1"

    token = inside(alice, made["id"], "tail -1 /etc/dockyard/shutdown").strip()  # dockyard-shutdown's
    assert len(token) > 20
    saved = alice.post(f"/instances/{made['id']}/save", json={"name": "env:v1"})
    assert saved.status_code == 202, saved.text
    wait_for_image(alice, "env:v1", made["id"])
    ref = alice.get("/images/env:v1").json()["ref"]
    config = docker_client.api.inspect_image(ref)["Config"]
    shown = str(config)
    for value in (SECRET, SEALED, password):
        assert value not in shown
    assert {"DOCKYARD_JUPYTER_TOKEN=", "API_KEY=", "HF_TOKEN="} <= set(config["Env"])  # blanked, not carried
    assert config["Entrypoint"] == docker_client.api.inspect_image(pytorch_ref(docker_client))["Config"]["Entrypoint"]
    files = files_of(docker_client, ref, "cat /root/work.txt; ls /etc/ssh | grep -c ssh_host_ || true; "
                                         "grep '^root:' /etc/shadow | cut -d: -f2; "
                                         "ls /etc/dockyard/shutdown 2>&1 | grep -c 'No such'; "
                                         "cat /etc/environment 2>&1 | head -1")
    lines = files.splitlines()
    assert lines[0] == "keep-me" and lines[1] == "0" and lines[2] == "*" and lines[3] == "1"
    assert token not in files
    assert SECRET not in files and SEALED not in files

    # Published, rented by bob: his own host keys, no password login with alice's password.
    srv.admin.post("/images/alice/env:v1/publish").raise_for_status()
    his = bob.post("/instances", json={"image": "alice/env:v1", "gpu_count": 0}).json()
    wait_status(bob, his["id"], "running", timeout=180)
    env = inside(bob, his["id"], "env; cat /etc/environment /etc/profile.d/01-dockyard-env.sh 2>/dev/null")
    assert SECRET not in env and SEALED not in env and password not in env
    his_key = inside(bob, his["id"], "for i in $(seq 60); do [ -s /etc/ssh/ssh_host_ed25519_key.pub ] && break; "
                                     "sleep 1; done; cat /etc/ssh/ssh_host_ed25519_key.pub")
    assert his_key.startswith("ssh-ed25519") and his_key != host_key
    assert inside(bob, his["id"], "grep '^root:' /etc/shadow | cut -d: -f2").strip() == "*"
    assert inside(bob, his["id"], "cat /root/work.txt") == "keep-me\n"


def pytorch_ref(docker_client):
    return find(load_catalog(), IMAGE).ref


def wait_for_image(api, name, instance_id, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        image = api.get(f"/images/{name}")
        # A failed save drops the image and says why in the instance's events.
        assert image.status_code == 200, api.get(f"/instances/{instance_id}/events").text
        if image.json()["status"] == "ready":
            return
        time.sleep(1)
    pytest.fail(f"image {name} not ready: {image.text}")
