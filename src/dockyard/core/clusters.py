"""Clusters of instances for distributed training. Pure: the caller brings the facts.

A cluster is K members, each with N GPUs of one model, placed all at once or not at all,
on one node or across nodes that share a Docker swarm (an overlay network spans engines
only there). Each member learns its rank, the others' addresses and a hostfile.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from dockyard.core.errors import Conflict, InvalidInput
from dockyard.core.placement import ANY_MODEL, NodeView, Placement, place
from dockyard.core.policies import MILLI

# Hostnames `<cluster>-<rank>` must be valid DNS labels: lower case, digits, hyphens.
CLUSTER_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,49}$"
_cluster_name = re.compile(CLUSTER_NAME_PATTERN)
MASTER_PORT = 29500  # torchrun's default; each member has its own network namespace
HOSTFILE_PATH = "/etc/dockyard/hostfile"
# Members get fixed addresses low in the cluster's subnet; Docker (and the swarm's
# per-node load-balancer endpoints) allocate from the upper half only.
FIRST_MEMBER_HOST = 2


@dataclass(frozen=True)
class ClusterShape:
    members: int
    gpus: int  # per member
    model: str


def check_name(name: str) -> None:
    if not _cluster_name.fullmatch(name or ""):
        raise InvalidInput(
            f"name: {name!r} is not a valid cluster name: use 1 to 50 lower-case letters, digits and "
            f"hyphens, starting with a letter or digit (members are called <name>-0, <name>-1, ...)",
            field="name",
        )


def check_shape(nodes: list[NodeView], shape: ClusterShape, max_members: int) -> None:
    """Refuse clusters that could never be placed, naming the field at fault."""
    if shape.members < 1 or shape.members > max_members:
        raise InvalidInput(
            f"nodes: a cluster has 1 to {max_members} members (max_cluster_nodes); got {shape.members}",
            field="nodes",
        )
    if shape.gpus < 0:
        raise InvalidInput(f"gpus: must be 0 or more per member; got {shape.gpus}", field="gpus")
    if any(sep in shape.model for sep in ",+/ "):
        raise InvalidInput(
            f"gpu_model: every member of a cluster has GPUs of one model; {shape.model!r} mixes models "
            f"(pick one, or 'any' to let the platform choose one)",
            field="gpu_model",
        )
    known = sorted({m for n in nodes for m in n.models})
    if shape.model != ANY_MODEL and shape.model not in known:
        raise InvalidInput(
            f"gpu_model: unknown GPU model {shape.model!r}; this platform has: {', '.join(known) or 'none'}",
            field="gpu_model",
        )
    if shape.gpus == 0:
        return
    ceiling = {m: sum(n.models.get(m, 0) // shape.gpus for n in nodes) for m in known
               if shape.model in (ANY_MODEL, m)}
    best_model, most = max(ceiling.items(), key=lambda kv: (kv[1], kv[0]), default=(shape.model, 0))
    if most < shape.members:
        label = "GPUs of one model" if shape.model == ANY_MODEL else f"{shape.model} GPUs"
        totals = ", ".join(f"{n.name}: {n.models[best_model]}" for n in nodes if n.models.get(best_model))
        raise InvalidInput(
            f"nodes: a cluster of {shape.members} members with {shape.gpus} {label} each is larger than the "
            f"pool: even with every GPU free there is room for {most} such members"
            + (f" ({best_model} GPUs per node: {totals})" if totals else ""),
            field="nodes",
        )


def place_cluster(nodes: list[NodeView], shape: ClusterShape,
                  swarm: dict[str, str | None] | None = None) -> list[Placement]:
    """Place every member now, or raise Conflict saying what is missing.

    All members on one node when one has room (best fit: the fullest such node); else
    across the fewest nodes of one swarm (`swarm` maps node -> swarm id, None when the
    node is in none), largest first. Each member's GPUs are picked by placement.place()
    on a copy of the views with the GPUs already chosen removed.
    """
    swarm = swarm or {}
    online = [n for n in nodes if n.online]
    if not online:
        raise Conflict("no node is online")
    if shape.gpus == 0:
        node = place(online, ANY_MODEL, 0).node
        return [Placement(node, ()) for _ in range(shape.members)]

    models = sorted({g.model for n in online for g in n.free if shape.model in (ANY_MODEL, g.model)})
    options: list[tuple[int, int, str, list[str]]] = []  # (nodes used, spare room, model, node order)
    for model in models:
        room = {n.name: sum(1 for g in n.free if g.model == model) // shape.gpus for n in online}
        single = [name for name, r in room.items() if r >= shape.members]
        if single:
            name = min(single, key=lambda s: (room[s], s))
            options.append((1, room[name] - shape.members, model, [name] * shape.members))
            continue
        for group in sorted({swarm.get(n.name) for n in online} - {None}):
            members = sorted((n.name for n in online if swarm.get(n.name) == group and room[n.name]),
                             key=lambda s: (-room[s], s))
            order: list[str] = []
            for name in members:
                order += [name] * min(room[name], shape.members - len(order))
            if len(order) == shape.members:
                options.append((len(set(order)), 0, model, order))
    if not options:
        raise Conflict(_missing_message(online, shape, swarm))
    _, _, model, order = min(options, key=lambda o: (o[0], o[1], o[2]))

    views = {n.name: replace(n, free=[g for g in n.free if g.model == model]) for n in online}
    placements = []
    for name in order:
        view = views[name]
        chosen = place([view], model, shape.gpus)
        view.free = [g for g in view.free if g not in chosen.gpus]
        if view.host_share is not None:  # what this member holds of the node, for the next
            cpus, memory = view.host_share.of(shape.gpus * MILLI, view.cpus)
            view.cpus_used, view.memory_used_bytes = view.cpus_used + cpus, view.memory_used_bytes + memory
        placements.append(chosen)
    return placements


def _missing_message(nodes: list[NodeView], shape: ClusterShape, swarm: dict[str, str | None]) -> str:
    label = "GPUs" if shape.model == ANY_MODEL else f"{shape.model} GPUs"
    best, best_model = 0, shape.model
    models = sorted({g.model for n in nodes for g in n.free if shape.model in (ANY_MODEL, g.model)})
    for model in models:
        room = {n.name: sum(1 for g in n.free if g.model == model) // shape.gpus for n in nodes}
        groups = {swarm.get(n.name) for n in nodes} - {None}
        spans = [sum(r for name, r in room.items() if swarm.get(name) == g) for g in groups]
        fit = max([*room.values(), *spans], default=0)
        if fit > best:
            best, best_model = fit, model
    missing = shape.members - best
    free = ", ".join(
        f"{n.name}: {sum(1 for g in n.free if g.model == best_model)}" for n in nodes
        if best_model in n.models
    )
    message = (
        f"not enough free {label} for a cluster of {shape.members} members with {shape.gpus} each: room for "
        f"{best} now, {missing} member{'s' if missing != 1 else ''} ({missing * shape.gpus} GPUs) missing"
        + (f"; free {best_model} GPUs per node: {free}" if free else "")
    )
    lone = sorted(n.name for n in nodes if swarm.get(n.name) is None)
    if len(nodes) > 1 and lone:
        message += (f"; node{'s' if len(lone) > 1 else ''} {', '.join(lone)} "
                    f"{'are' if len(lone) > 1 else 'is'} in no Docker swarm with the others, so members cannot "
                    f"span {'them' if len(lone) > 1 else 'it'} (see docs/distributed.md)")
    return message


# ---- what each member is told ---------------------------------------------------------


def member_hostnames(name: str, members: int) -> list[str]:
    return [f"{name}-{rank}" for rank in range(members)]


def member_ips(subnet: str, members: int) -> list[str]:
    network = ipaddress.ip_network(subnet)
    if FIRST_MEMBER_HOST + members > network.num_addresses // 2:
        raise ValueError(f"subnet {subnet} is too small for {members} members")
    return [str(network[FIRST_MEMBER_HOST + rank]) for rank in range(members)]


def dynamic_range(subnet: str) -> str:
    """The upper half of the subnet, where Docker allocates addresses of its own."""
    network = ipaddress.ip_network(subnet)
    return str(list(network.subnets(prefixlen_diff=1))[1])


def pick_subnet(pool: str, prefix: int, taken: list[str]) -> str:
    busy = [ipaddress.ip_network(t, strict=False) for t in taken]
    for subnet in ipaddress.ip_network(pool).subnets(new_prefix=prefix):
        if not any(subnet.overlaps(other) for other in busy):
            return str(subnet)
    raise Conflict(f"no free /{prefix} left in the cluster network pool {pool}")


def member_env(name: str, rank: int, members: int, gpus: int, ips: list[str],
               port: int = MASTER_PORT) -> dict[str, str]:
    """The variables torchrun, DeepSpeed and MPI launchers read, for member `rank`."""
    per_node = max(gpus, 1)
    return {
        "MASTER_ADDR": f"{name}-0",
        "MASTER_PORT": str(port),
        "NNODES": str(members),
        "NODE_RANK": str(rank),
        "NPROC_PER_NODE": str(per_node),
        "WORLD_SIZE": str(members * per_node),
        "DOCKYARD_CLUSTER": name,
        "DOCKYARD_NODE_IPS": ",".join(ips),
        "DOCKYARD_NODE_HOSTS": ",".join(member_hostnames(name, members)),
        "DOCKYARD_HOSTFILE": HOSTFILE_PATH,
    }


def hostfile(name: str, members: int, gpus: int) -> str:
    """MPI/DeepSpeed style: one `host slots=N` line per member, rank order."""
    return "".join(f"{host} slots={max(gpus, 1)}\n" for host in member_hostnames(name, members))


def cluster_status(statuses: list[str]) -> str:
    """One word for a cluster from its members' statuses."""
    distinct = set(statuses)
    if len(distinct) == 1:
        return statuses[0]
    for busy in ("releasing", "creating", "starting", "stopping"):
        if busy in distinct:
            return busy
    if distinct & {"failed", "lost"}:
        return "degraded"
    return "mixed"
