"""The Docker runtime keeps the runtime contract that the in-memory fake keeps too."""

import os
import socket
import uuid
from pathlib import Path

import pytest

from dockyard.config import NodeConfig
from dockyard.runtimes.docker import DockerRuntime
from tests.harness import BASE_IMAGE
from tests.runtime_contract import LifecycleContract, RuntimeContract


@pytest.fixture
def labels():
    return {"dockyard.contract": uuid.uuid4().hex[:10]}


@pytest.fixture
def runtime(docker_client, labels):
    made = DockerRuntime(NodeConfig(name="local"), network_pool="10.219.0.0/16", busybox=Path("/bin/busybox"))
    yield made
    selector = {"label": [f"{k}={v}" for k, v in labels.items()]}
    for container in docker_client.containers.list(all=True, filters=selector):
        container.remove(force=True)
    for volume in docker_client.volumes.list(filters=selector):
        volume.remove(force=True)
    for network in docker_client.networks.list(filters=selector):
        network.remove()


@pytest.fixture
def image():
    return BASE_IMAGE


class TestDockerRuntime(LifecycleContract):
    @pytest.fixture(autouse=True)
    def _held(self):
        self.held: list[socket.socket] = []
        yield
        for held in self.held:
            held.close()

    def hold_port(self, runtime, port):
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        self.held.append(holder)

    def vanish(self, runtime, container_id):
        runtime.client.api.remove_container(container_id, force=True)


def test_an_engines_free_space_is_read_where_its_containers_are(runtime, docker_client, labels):
    """Directly where the engine is on this host; else inside one of its containers."""
    found = os.statvfs(docker_client.info()["DockerRootDir"])
    free = found.f_bavail * found.f_frsize
    assert runtime.storage_free() is None  # not probed yet: as a remote engine, no container named
    spec = RuntimeContract().spec(runtime, BASE_IMAGE, labels)
    container_id = runtime.create(spec)
    runtime.start(container_id)
    assert abs(runtime.storage_free(container_id) - free) < 256 * 1024**2
    runtime.probe_disk_limit(BASE_IMAGE)
    assert abs(runtime.storage_free() - free) < 256 * 1024**2
