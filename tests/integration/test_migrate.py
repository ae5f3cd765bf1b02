"""Migration (docs/migrate.md) between two real Docker engines: this host's
(node `local`) and one in its own network namespace (node `far`, tests/engines.py). A
stopped instance moves with both disks, checked, keeping its id, name, Jupyter URL and
ports; its SSH endpoint changes. A target that dies mid-copy, or a server killed
mid-copy, leaves it stopped on its source with both disks, the partial copy removed.
Refusals change nothing."""

import random
import re
import time

import pytest

from tests.engines import MIGRATION, clean_engine, engine, far_node_config, freeze, remove_images, thaw
from tests.harness import BASE_IMAGE, Server, wait_status
from tests.integration.test_clone import run, wait_operation

pytestmark = pytest.mark.docker
FILES = ("echo system > /root/hello && mkdir -p /root/data/deep && head -c 3000000 /dev/urandom > /root/data/deep/blob"
         " && echo secret > /root/data/own && chown 1234:99 /root/data/own && chmod 640 /root/data/own"
         " && ln -s deep/blob /root/data/link && : > /root/data/empty")
CHECK = ("cat /root/hello; cd /root/data && sha256sum deep/blob own && stat -c '%u:%g %a' own && readlink link"
         " && ls -A | sort | tr '\\n' ' '")


@pytest.fixture
def two(docker_client):
    remote = engine(MIGRATION, [BASE_IMAGE])
    srv = Server(simulated_gpus="A100-80GB:1", migration_io_timeout_s="4", cpus_per_gpu="1", memory_per_gpu_gb="1")
    (srv.home / "config.toml").write_text(far_node_config(MIGRATION, f'public_host = "{MIGRATION.engine_addr}"\n'))
    srv.start()
    srv.admin = srv.add_user("ops", admin=True)
    srv.admin.post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    srv.api = srv.add_user("mia")
    srv.remote = remote
    yield srv
    thaw(MIGRATION)
    deployment = srv.deployment
    srv.close()
    clean_engine(remote)
    remove_images(remote, deployment)


def objects_of(client, instance_id: str) -> list[str]:
    """The instance's containers, disks and system disk images on an engine (containers from
    one listing: the SDK's `containers.list` inspects each, and fails on one removed meanwhile)."""
    label = {"label": f"dockyard.instance={instance_id}"}
    return ([c["Names"][0] for c in client.api.containers(all=True, filters=label)]
            + [v.name for v in client.volumes.list() if instance_id in v.name]
            + [t for i in client.images.list(filters=label) for t in i.tags])


def migrate_once_cleaned_up(api, key: str, node: str):
    """Ask for a migration, again while the last one's clean-up refuses it: as its refusal
    says, try again in a moment."""
    deadline = time.monotonic() + 60
    while "still being cleaned up" in (answer := api.post(f"/instances/{key}/migrate", json={"node": node})).text:
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.5)
    return answer


def anonymous_volumes(client) -> set[str]:
    return {v.name for v in client.volumes.list(filters={"dangling": True}) if re.fullmatch("[0-9a-f]{64}", v.name)}


def wait_until(check, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.3)
    return found


def stopped_with_files(api, name: str, data_file_mb: int = 0) -> tuple[dict, str]:
    made = api.post("/instances", json={"image": "debian-12", "gpu_model": "A100-80GB", "gpu_count": 1,
                                        "name": name}).json()
    assert wait_status(api, made["id"], "running")["node"] == "local"
    extra = f" && head -c {data_file_mb}000000 /dev/urandom > /root/data/large" if data_file_mb else ""
    assert run(api, made["id"], FILES + extra) == (0, "")
    code, seen = run(api, made["id"], CHECK)
    assert code == 0, seen
    api.post(f"/instances/{made['id']}/stop").raise_for_status()
    return wait_status(api, made["id"], "stopped"), seen


def test_a_stopped_instance_moves_with_both_disks_and_keeps_its_urls(two, docker_client):
    api = two.api
    before, seen = stopped_with_files(api, "mover")
    key = before["id"]
    api.post(f"/instances/{key}/ports", json={"port": 6006}).raise_for_status()
    api.post(f"/instances/{key}/ports/6006/share").raise_for_status()
    ports = api.get(f"/instances/{key}/ports").json()
    source_env = docker_client.containers.get(f"dy-{two.deployment}-{key}").attrs["Config"]["Env"]

    anonymous_before = anonymous_volumes(two.remote)
    answer = api.post(f"/instances/{key}/migrate", json={"node": "far"}, headers={"Idempotency-Key": "move-1"})
    assert answer.status_code == 202, answer.text
    moving, op = answer.json()["instance"], answer.json()["operation"]
    assert (moving["status"], moving["node"], op["kind"], op["instance_id"]) == ("migrating", "local", "migrate", key)
    assert len(moving["gpus"]) == 1  # the target's, held while the disks are copied
    again = api.post(f"/instances/{key}/migrate", json={"node": "far"}, headers={"Idempotency-Key": "move-1"})
    assert again.json()["operation"]["id"] == op["id"]  # the first answer; nothing done twice

    views = wait_operation(api, op, timeout=240)
    assert views[-1]["error"] is None and views[-1]["percent"] == 100, views[-1]
    percents = [v["percent"] or 0 for v in views]
    assert percents == sorted(percents)
    assert any(v["phase"].startswith("copying disk") for v in views), [v["phase"] for v in views]
    after = wait_status(api, key, "running")
    assert (after["id"], after["name"], after["node"]) == (key, "mover", "far")
    assert run(api, key, CHECK) == (0, seen)  # both disks, byte for byte, owners and modes kept
    assert after["ssh_command"] != before["ssh_command"] and after["ssh_command"].endswith(f"@{MIGRATION.engine_addr}")
    moved = next(e for e in api.get(f"/instances/{key}/events").json() if e["from_status"] == "migrating")
    assert "SSH endpoint now" in moved["cause"] and MIGRATION.engine_addr in moved["cause"], moved
    assert "checked" in moved["cause"]
    assert any("migrated from node local to node far" in n["message"] for n in api.get("/notifications").json())
    # The Jupyter URL is the instance's: same id, same token, same base path; ports and links kept.
    target_env = two.remote.containers.get(f"dy-{two.deployment}-{key}").attrs["Config"]["Env"]
    for name in ("DOCKYARD_JUPYTER_TOKEN", "DOCKYARD_JUPYTER_BASE_URL"):
        assert [e for e in source_env if e.startswith(name)] == [e for e in target_env if e.startswith(name)]
    assert api.get(f"/instances/{key}/ports").json() == ports
    config = two.home / "ssh_config"
    two.cli("ssh-config", "--path", str(config), token_of="mia", check=True)
    assert f"HostName {MIGRATION.engine_addr}" in config.read_text()
    # The source's disks went once it ran on the target; the helpers left no anonymous volume.
    wait_until(lambda: not objects_of(docker_client, key), "the source's disks are removed")
    assert anonymous_volumes(two.remote) <= anonymous_before


def test_refusals_name_the_reason_and_change_nothing(two):
    api = two.api
    inst, _ = stopped_with_files(api, "stay")
    key = inst["id"]
    events = api.get(f"/instances/{key}/events").json()
    for body, code, words in [
        ({"node": "nowhere"}, 404, "node 'nowhere' not found"),
        ({"node": "local"}, 400, "on node local already"),
        ({}, 422, "node"),
    ]:
        refused = api.post(f"/instances/{key}/migrate", json=body)
        assert refused.status_code == code and words in refused.text, refused.text
    hog = api.post("/instances", json={"image": "debian-12", "gpu_model": "A100-80GB", "gpu_count": 2}).json()
    assert wait_status(api, hog["id"], "running")["node"] == "far"
    refused = api.post(f"/instances/{key}/migrate", json={"node": "far"})
    assert refused.status_code == 409 and "0 A100-80GB GPUs are free" in refused.text, refused.text
    refused = api.post(f"/instances/{key}/start", json={"migrate": True})
    assert refused.status_code == 409 and "far: 0" in refused.text, refused.text
    refused = api.post(f"/instances/{key}/start", json={"migrate": True, "no_gpu": True})
    assert refused.status_code in (400, 422) and "not both" in refused.text, refused.text
    running = api.post(f"/instances/{hog['id']}/migrate", json={"node": "local"})
    assert running.status_code == 409 and "stop it first" in running.text, running.text
    now = api.get(f"/instances/{key}").json()
    assert (now["status"], now["node"]) == ("stopped", "local")
    assert api.get(f"/instances/{key}/events").json() == events
    # And once the GPUs are free, `start --migrate` (the CLI) finds the node itself.
    api.delete(f"/instances/{hog['id']}").raise_for_status()
    wait_status(api, hog["id"], "released")
    done = two.cli("start", key, "--migrate", "--wait", token_of="mia", timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "on node far" in done.stdout and MIGRATION.engine_addr in done.stdout, done.stdout
    assert api.get(f"/instances/{key}").json()["node"] == "far"


def test_a_target_that_dies_mid_copy_leaves_the_instance_whole_on_its_source(two, docker_client):
    api = two.api
    inst, seen = stopped_with_files(api, "anchored", data_file_mb=300)
    key = inst["id"]
    anonymous_before = anonymous_volumes(two.remote)
    op = api.post(f"/instances/{key}/migrate", json={"node": "far"}).json()["operation"]
    deadline = time.monotonic() + 120
    while not (view := api.get(f"/operations/{op['id']}").json())["phase"].startswith("copying disk"):
        assert not view["done"] and time.monotonic() < deadline, view
        time.sleep(0.05)
    freeze(MIGRATION)
    try:
        view = wait_until(lambda: (v := api.get(f"/operations/{op['id']}").json())["done"] and v, "the copy fails", 90)
        assert view["error"] and "stays on node local" in view["error"], view
        now = api.get(f"/instances/{key}").json()
        assert (now["status"], now["node"], now["gpus"]) == ("stopped", "local", [])
    finally:
        thaw(MIGRATION)
    # The partial copy is removed once the target answers again.
    wait_until(lambda: not objects_of(two.remote, key), "the partial copy on far is removed", 90)
    assert not anonymous_volumes(two.remote) - anonymous_before
    api.post(f"/instances/{key}/start").raise_for_status()
    assert wait_status(api, key, "running")["node"] == "local"
    assert run(api, key, CHECK) == (0, seen)


def test_a_server_killed_mid_copy_comes_back_with_the_instance_on_its_source(two, docker_client):
    api = two.api
    inst, seen = stopped_with_files(api, "survivor", data_file_mb=300)
    key = inst["id"]
    anonymous_before = anonymous_volumes(two.remote)
    op = api.post(f"/instances/{key}/migrate", json={"node": "far"}).json()["operation"]
    deadline = time.monotonic() + 120
    while not api.get(f"/operations/{op['id']}").json()["phase"].startswith("copying disk"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    two.kill9()
    two.start()
    now = wait_status(api, key, "stopped", timeout=60)
    assert now["node"] == "local" and now["gpus"] == []
    assert "interrupted" in api.get(f"/instances/{key}/events").json()[-1]["cause"]
    wait_until(lambda: not objects_of(two.remote, key), "the partial copy on far is removed", 60)
    assert not anonymous_volumes(two.remote) - anonymous_before
    # And it can go again, whole (once the sweep has forgotten the peer it cleaned).
    op = migrate_once_cleaned_up(api, key, "far").json()["operation"]
    assert wait_operation(api, op, timeout=240)[-1]["error"] is None
    assert wait_status(api, key, "running")["node"] == "far"
    assert run(api, key, CHECK) == (0, seen)


def settled(api, timeout: float = 120) -> list[dict]:
    """Every live instance once none is migrating or starting."""
    deadline = time.monotonic() + timeout
    while True:
        found = api.get("/instances").json()
        if not any(i["status"] in ("migrating", "starting", "stopping") for i in found):
            return found
        assert time.monotonic() < deadline, [(i["name"], i["status"]) for i in found]
        time.sleep(0.3)


def test_kill_at_random_moments_during_migrations_leaves_each_instance_whole_on_one_node(two, docker_client):
    api = two.api
    engines = {"local": docker_client, "far": two.remote}
    made = [stopped_with_files(api, f"m{n}") for n in range(2)]
    seen = {inst["id"]: files for inst, files in made}
    rng = random.Random(12)
    for round_ in range(4):
        for inst in api.get("/instances").json():
            if inst["status"] == "running":
                api.post(f"/instances/{inst['id']}/stop").raise_for_status()
                wait_status(api, inst["id"], "stopped")
        for inst in api.get("/instances").json():
            other = "far" if inst["node"] == "local" else "local"
            # The last round's copy on the other node may still be being swept.
            answer = migrate_once_cleaned_up(api, inst["id"], other)
            # node local has one GPU: the second of two going there is refused
            assert answer.status_code == 202 or "GPUs are free" in answer.text, answer.text
        time.sleep(rng.uniform(0.1, 4.0))
        two.kill9()
        two.start()
        instances = settled(api)
        uuids = [g["uuid"] for i in instances for g in i["gpus"]]
        assert len(uuids) == len(set(uuids)), "a GPU is held twice"
        for inst in instances:
            key, here = inst["id"], inst["node"]
            there = "far" if here == "local" else "local"
            assert inst["status"] in ("running", "stopped"), inst
            if inst["status"] == "stopped":
                assert inst["gpus"] == [], inst
            # One container, on its node; nothing of it left on the other once swept.
            # (a helper whose removal timed out goes at the next reconcile pass)
            def only_its_container():
                found = engines[here].containers.list(all=True, filters={"label": f"dockyard.instance={key}"})
                return found if [c.name for c in found] == [f"dy-{two.deployment}-{key}"] else None
            mine = wait_until(only_its_container, f"round {round_}: {inst['name']} has one container on {here}")
            assert (mine[0].status == "running") == (inst["status"] == "running"), (round_, inst)
            wait_until(lambda: not objects_of(engines[there], key), f"{inst['name']}: node {there} is cleaned")
            if inst["status"] == "running":
                assert run(api, key, CHECK) == (0, seen[key])
    for inst in api.get("/instances").json():  # the stopped ones have both disks too
        if inst["status"] == "stopped":
            api.post(f"/instances/{inst['id']}/start", json={"no_gpu": True}).raise_for_status()
            wait_status(api, inst["id"], "running")
        assert run(api, inst["id"], CHECK) == (0, seen[inst["id"]])


def test_a_volume_mounted_as_the_data_disk_moves_with_the_instance(two, docker_client):
    api = two.api
    made = api.post("/volumes", json={"name": "carried", "size_gb": 2, "node": "local"})
    assert made.status_code == 201, made.text
    volume = made.json()
    inst = api.post("/instances", json={"image": "debian-12", "gpu_model": "A100-80GB", "gpu_count": 1,
                                        "name": "porter", "volumes": ["carried"]}).json()
    key = inst["id"]
    assert wait_status(api, key, "running")["node"] == "local"
    assert run(api, key, FILES) == (0, "")
    seen = run(api, key, CHECK)
    api.post(f"/instances/{key}/stop").raise_for_status()
    wait_status(api, key, "stopped")
    engine_name = f"dy-{two.deployment}-vol-{volume['id']}"

    op = api.post(f"/instances/{key}/migrate", json={"node": "far"}).json()["operation"]
    assert wait_operation(api, op, timeout=240)[-1]["error"] is None
    assert wait_status(api, key, "running")["node"] == "far"
    assert run(api, key, CHECK) == seen
    moved = api.get("/volumes/carried").json()
    assert (moved["node"], moved["size_gb"], moved["instance"], moved["mount_path"]) == ("far", 2, "porter",
                                                                                        "/root/data")
    assert two.remote.volumes.get(engine_name)
    wait_until(lambda: engine_name not in {v.name for v in docker_client.volumes.list()},
               "the volume's old disk on node local is removed")
    # It holds its size on the new node too: a disk of 2 GB.
    code, out = run(api, key, "df -k /root/data | tail -1")
    assert code == 0 and 1.8 * 1024**2 < int(out.split()[1]) < 2.3 * 1024**2, out


def test_a_migration_helper_left_behind_is_swept(two):
    """A helper whose removal timed out (a slow engine) must not stay on the node."""
    labels = {"dockyard.deployment": two.deployment, "dockyard.instance": "gone0instance",
              "dockyard.helper": "migrate"}
    left = two.remote.containers.create(BASE_IMAGE, ["true"], labels=labels)
    wait_until(lambda: not two.remote.containers.list(all=True, filters={"id": left.id}),
               "the stale helper is removed", 60)
