"""Docker's side of clusters (DockerRuntime calls it): swarm membership and per-cluster networks.

A cluster on one engine gets a bridge network of its own; a cluster across engines an
attachable overlay network of the Docker swarm those engines are in (created on a
manager; workers attach to it by name). Either way the network has an explicit subnet
whose lower half holds the members' fixed addresses and whose upper half is left to
Docker (the swarm puts a load-balancer address per node there).
"""

from __future__ import annotations

import ipaddress

from docker.errors import APIError, NotFound
from docker.types import IPAMConfig, IPAMPool

from dockyard.core.clusters import dynamic_range
from dockyard.runtimes.base import NO_SWARM, SwarmState
from dockyard.runtimes.docker_errors import engine_error


def swarm_state(runtime) -> SwarmState:
    info = runtime.client.info().get("Swarm") or {}
    if info.get("LocalNodeState") != "active" or not info.get("NodeID"):
        return NO_SWARM
    if not info.get("ControlAvailable"):
        return SwarmState(info["NodeID"], False, None)
    members = frozenset(n.id for n in runtime.client.nodes.list())
    return SwarmState(info["NodeID"], True, (info.get("Cluster") or {}).get("ID"), members)


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
        raise engine_error(exc, f"could not create the cluster network {name} ({driver}, {subnet})") from exc
    return name


def remove_network(runtime, name: str) -> None:
    for network in [n for n in runtime.client.networks.list(names=[name]) if n.name == name]:
        try:
            network.remove()
        except NotFound:
            pass
        except APIError as exc:
            raise engine_error(exc, f"could not remove network {name}") from exc
