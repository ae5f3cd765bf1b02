"""System disks measured where the engine cannot hold them to their size (docs/volumes.md):
at once when the node's storage fills fast, not at their five-minute turn; and on a btrfs
node (tests/engines.BTRFS), where Docker takes a size but cannot hold it safely."""

import docker
import pytest

from tests.engines import BTRFS, clean_engine, engine, far_node_config, remove_images
from tests.harness import BASE_IMAGE, Server, wait_status
from tests.integration.test_volumes import GIB, _make, _sh

pytestmark = pytest.mark.docker


def write_until_stopped(api, key: str, size: str) -> None:
    """Write `size` to the system disk in the background (the stop may end the write), and
    wait for the measured limit (1 GB) to stop the instance, saying why."""
    writer = f"nohup sh -c 'head -c {size} /dev/zero > /root/big' >/dev/null 2>&1 & echo ok"
    assert _sh(api, key, writer) == (0, "ok\n")
    wait_status(api, key, "stopped", timeout=90)
    cause = next(e["cause"] for e in reversed(api.get(f"/instances/{key}/events").json())
                 if e["to_status"] == "stopping")
    assert "over the 1 GB limit" in cause, cause


def test_a_fast_writer_is_measured_at_once_and_stopped(docker_client):
    """Its turn to be measured is an hour away, and so is the next auto-stop pass; each half
    GB the node's storage loses has it measured now, so once it is half a GB past its limit
    a reading says so (one during the write may come just under the limit: the next drop
    brings another), and that reading has it stopped at once."""
    srv = Server(system_disk_gb="1", metrics_interval_s="1", metrics_disk_interval_s="3600",
                 disk_pressure_drop_gb="0.5", autostop_interval_s="3600").start()
    try:
        srv.add_user("ops", admin=True).post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
        api = srv.add_user("eve")
        key = _make(api, name="writer")["id"]
        write_until_stopped(api, key, "2000M")
    finally:
        srv.close()


@pytest.fixture(scope="module")
def btrfs_node(docker_client):
    """Node `far`: an engine whose data root is btrfs, where Docker takes a container size."""
    remote = engine(BTRFS, [BASE_IMAGE])
    srv = Server(simulated_gpus="RTX-4090:1", system_disk_gb="1", metrics_interval_s="1",
                 metrics_disk_interval_s="1", autostop_interval_s="0.5", cpus_per_gpu="1", memory_per_gpu_gb="1")
    (srv.home / "config.toml").write_text(far_node_config(BTRFS))
    srv.start()
    srv.add_user("ops", admin=True).post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    srv.api = srv.add_user("ivy")
    yield srv
    deployment = srv.deployment
    srv.close()
    clean_engine(remote)
    remove_images(remote, deployment)


def test_a_btrfs_node_measures_system_disks_and_a_full_one_starts_again(btrfs_node):
    """Docker's btrfs driver takes a size, but a container filled to it can never be
    mounted again (runtimes/docker.BTRFS_SIZES). So such a node is measured, as on ext4:
    the instance that filled its system disk is stopped, and starts again with its files."""
    api = btrfs_node.api
    made = _make(api, name="filler", gpu_model="A100-80GB", gpu_count=1)
    assert made["node"] == "far"
    key = made["id"]
    sized = [c.attrs["HostConfig"].get("StorageOpt") for c in btrfs_node_containers(key)]
    assert sized == [None]
    write_until_stopped(api, key, "1200M")
    api.post(f"/instances/{key}/start").raise_for_status()
    wait_status(api, key, "running")
    code, size = _sh(api, key, "stat -c %s /root/big")
    assert code == 0 and int(size) >= GIB - 100 * 1024**2, size


def btrfs_node_containers(instance_id: str) -> list:
    return docker.DockerClient(base_url=BTRFS.socket).containers.list(
        all=True, filters={"label": f"dockyard.instance={instance_id}"})
