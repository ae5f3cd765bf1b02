"""Engine work for clusters: swarm membership, per-cluster networks, files.

A cluster on one engine gets a bridge network of its own; a cluster across engines an
attachable overlay network of the Docker swarm those engines are in (created on a
manager; workers attach to it by name). Either way the network has an explicit subnet
whose lower half holds the members' fixed addresses and whose upper half is left to
Docker (the swarm puts a load-balancer address per node there).
"""

from __future__ import annotations

import ipaddress
import posixpath
from dataclasses import dataclass

from docker.errors import APIError, NotFound
from docker.types import IPAMConfig, IPAMPool

from dockyard.core.clusters import dynamic_range
from dockyard.runtimes.base import RuntimeError_


@dataclass(frozen=True)
class SwarmState:
    node_id: str | None  # this engine's swarm node id, None when not in an active swarm
    manager: bool
    cluster_id: str | None  # the swarm's id, known on managers only
    members: frozenset[str] = frozenset()  # node ids in the swarm, known on managers only


def swarm_state(runtime) -> SwarmState:
    info = runtime.client.info().get("Swarm") or {}
    if info.get("LocalNodeState") != "active" or not info.get("NodeID"):
        return SwarmState(None, False, None)
    if not info.get("ControlAvailable"):
        return SwarmState(info["NodeID"], False, None)
    members = frozenset(n.id for n in runtime.client.nodes.list())
    return SwarmState(info["NodeID"], True, (info.get("Cluster") or {}).get("ID"), members)


def swarm_groups(runtimes: dict) -> tuple[dict[str, str | None], dict[str, str]]:
    """Which swarm each node's engine is in (None: none, or one whose managers this
    platform does not reach), and for each swarm a node whose engine is a manager."""
    states = {}
    for node, runtime in runtimes.items():
        try:
            states[node] = swarm_state(runtime)
        except Exception:  # an engine that does not answer spans nothing
            states[node] = SwarmState(None, False, None)
    managers = {s.cluster_id: node for node, s in sorted(states.items()) if s.manager and s.cluster_id}
    groups: dict[str, str | None] = {}
    for node, state in states.items():
        groups[node] = next((cid for cid, m in managers.items() if state.node_id in states[m].members), None)
    return groups, managers


def taken_subnets(runtime) -> list[str]:
    return [
        config["Subnet"]
        for network in runtime.client.api.networks()
        for config in ((network.get("IPAM") or {}).get("Config") or [])
        if config.get("Subnet") and ":" not in config["Subnet"]
    ]


def ensure_network(runtime, name: str, subnet: str, driver: str, labels: dict[str, str],
                   encrypted: bool = False) -> str:
    """The cluster network `name` on this engine (a swarm manager for overlay), made if
    missing. Returns the name: workers know an overlay network only by it."""
    found = [n for n in runtime.client.networks.list(names=[name]) if n.name == name]
    if found:
        return name
    network = ipaddress.ip_network(subnet)
    ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=subnet, iprange=dynamic_range(subnet), gateway=str(network[1]))])
    options = {"encrypted": ""} if (driver == "overlay" and encrypted) else None
    try:
        runtime.client.networks.create(name, driver=driver, labels=labels, ipam=ipam, options=options,
                                       attachable=driver == "overlay" or None,
                                       scope="swarm" if driver == "overlay" else None)
    except APIError as exc:
        raise RuntimeError_(f"could not create the cluster network {name} ({driver}, {subnet}): "
                            f"{exc.explanation or exc}") from exc
    return name


def remove_network(runtime, name: str) -> None:
    for network in [n for n in runtime.client.networks.list(names=[name]) if n.name == name]:
        try:
            network.remove()
        except NotFound:
            pass
        except APIError as exc:
            raise RuntimeError_(f"could not remove network {name}: {exc.explanation or exc}") from exc


def put_file(runtime, container_id: str, path: str, data: bytes, mode: int = 0o644) -> None:
    """Write a file into a container (created or running), making its folder."""
    folder, name = posixpath.split(path)
    parent, directory = posixpath.split(folder)
    runtime.put_files(container_id, directory, {name: (data, mode)}, parent)
