"""DockerRuntime looks a user's network up once, and makes one removed behind its back
again at the next start (against a stand-in for the engine's network calls)."""

from __future__ import annotations

import itertools
import threading

import pytest
from docker.errors import APIError

from dockyard.runtimes.base import RuntimeError_
from dockyard.runtimes.docker import DockerRuntime

LABELS = {"dockyard.deployment": "test"}


class Network:
    def __init__(self, id: str, name: str):
        self.id, self.name, self.attrs = id, name, {"Created": id}


class Engine:
    """Networks by id; a container joins networks by the key it was created with (a
    name, or an id when no network had that name), as Docker 20.10 keeps them."""

    def __init__(self):
        self.networks: dict[str, Network] = {}
        self.joined: dict[str, set[str]] = {}
        self.lists = 0
        self._ids = (f"net{n}" for n in itertools.count())
        self.start_error: str | None = None

    # docker.DockerClient.networks
    def list(self, names):
        self.lists += 1
        return [n for n in self.networks.values() if n.name in names]

    def create(self, name, driver, labels, ipam):
        network = Network(next(self._ids), name)
        self.networks[network.id] = network
        return network

    def remove(self, name: str) -> None:
        self.networks = {k: n for k, n in self.networks.items() if n.name != name}

    # docker.DockerClient.api
    def start(self, container_id):
        if self.start_error:
            raise APIError("start failed", explanation=self.start_error)
        for key in self.joined[container_id]:
            if not any(key in (n.id, n.name) for n in self.networks.values()):
                raise APIError("start failed", explanation=f"Could not attach to network {key}: rpc error: "
                                                            f"code = NotFound desc = network {key} not found")

    def inspect_container(self, container_id):
        return {"NetworkSettings": {"Networks": {key: {} for key in self.joined[container_id]}}}

    def disconnect_container_from_network(self, container_id, key, force=False):
        self.joined[container_id].remove(key)

    def connect_container_to_network(self, container_id, network_id):
        self.joined[container_id].add(self.networks[network_id].name)


@pytest.fixture
def engine():
    return Engine()


@pytest.fixture
def runtime(engine, monkeypatch):
    made = DockerRuntime.__new__(DockerRuntime)  # no engine to connect to
    made.client = type("Client", (), {"networks": engine, "api": engine})()
    made.disks, made.network_pool, made.network_prefix = None, "10.213.0.0/16", 24
    made._network_lock, made._networks = threading.Lock(), {}
    monkeypatch.setattr(made, "taken_subnets", lambda: [])
    return made


def test_a_network_is_looked_up_once(runtime, engine):
    first = runtime.ensure_network("dy-user-1", LABELS)
    assert runtime.ensure_network("dy-user-1", LABELS) == first and engine.lists == 1
    assert runtime.ensure_network("dy-user-2", LABELS) != first and engine.lists == 2


@pytest.mark.parametrize("removed_before_create", [False, True])
def test_a_network_removed_behind_its_back_is_made_again_at_the_start(runtime, engine, removed_before_create):
    old = runtime.ensure_network("dy-user-1", LABELS)
    if removed_before_create:  # the engine then keeps the container's network by the id given
        engine.remove("dy-user-1")
        engine.joined["c1"] = {old}
    else:
        engine.joined["c1"] = {"dy-user-1"}
        engine.remove("dy-user-1")
    runtime.start("c1")
    new = runtime.ensure_network("dy-user-1", LABELS)
    assert new != old and new in engine.networks and engine.joined["c1"] == {"dy-user-1"}
    assert runtime.ensure_network("dy-user-1", LABELS) == new  # remembered again


def test_a_start_refused_for_another_reason_is_the_engines_error(runtime, engine):
    network = runtime.ensure_network("dy-user-1", LABELS)
    engine.joined["c1"] = {"dy-user-1"}
    engine.start_error = "OCI runtime create failed"
    with pytest.raises(RuntimeError_):
        runtime.start("c1")
    assert runtime.ensure_network("dy-user-1", LABELS) == network and engine.lists == 1
