"""Clusters: K instances placed at once, on a private network of their own.

Members are ordinary instances (status machine, billing, events); what a cluster adds is
all-or-nothing placement, the network, the environment each member is told, and acting
on all members together. Like instances, every call records intent in short
transactions; Docker work happens in the driver (members) and the reconciler (networks).
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dockyard.core import clusters as core
from dockyard.core.errors import Conflict, DockyardError
from dockyard.core.placement import ANY_MODEL
from dockyard.core.sharing import MILLI
from dockyard.core.states import ClusterStatus, Status
from dockyard.db.models import Cluster, Instance, InstanceEvent, User, utcnow
from dockyard.runtimes.base import NO_SWARM, Feature, RuntimeError_
from dockyard.runtimes.instances import ContainerInstances, Held
from dockyard.services import allocation, images, instances, lifecycle, ownership, statuses
from dockyard.services.billing import ledger
from dockyard.services.platform import Platform

_subnet_lock = threading.Lock()  # one cluster network made at a time: no two pick one subnet


@dataclass
class ClusterRequest:
    name: str
    image: str
    nodes: int
    gpus: int = 1
    gpu_model: str = ANY_MODEL
    env: dict[str, str] = field(default_factory=dict)
    command: str | None = None
    data_disk_gb: int = 50


@dataclass
class MemberSetup:
    """What the driver gives a member's container."""

    network: str
    hostname: str
    ipv4_address: str
    env: dict[str, str]
    hostfile: str


# ---- reading -------------------------------------------------------------------------


def get_owned(db: Session, user: User, key: str) -> Cluster:
    return ownership.get_owned(db, Cluster, user, key, "cluster")


def list_clusters(db: Session, user: User, include_released: bool = False) -> list[Cluster]:
    return ownership.list_owned(db, Cluster, user, include_released)


def members(db: Session, cluster_id: str) -> list[Instance]:
    return list(db.scalars(select(Instance).where(Instance.cluster_id == cluster_id).order_by(Instance.cluster_rank)))


def status_of(db: Session, cluster: Cluster) -> str:
    if cluster.status == "released":
        return "released"
    return core.cluster_status([m.status for m in members(db, cluster.id)])


def network_name(platform: Platform, cluster_id: str) -> str:
    return f"dy-{platform.deployment}-cluster-{cluster_id}"


# ---- creating ------------------------------------------------------------------------


def create_cluster(platform: Platform, user: User, request: ClusterRequest) -> tuple[Cluster, list[str]]:
    """Place and record every member in one transaction, or nothing. Returns the cluster
    and its members' ids (for the caller to hand to the driver)."""
    core.check_name(request.name)
    shape = core.ClusterShape(members=request.nodes, gpus=request.gpus, model=request.gpu_model)
    if shape.members < 1 or shape.members > platform.settings.max_cluster_nodes:
        core.check_shape([], shape, platform.settings.max_cluster_nodes)  # raises, naming `nodes`
    instances.check_env(request.env, {})
    # Docker calls first, outside any transaction: which engines can share an overlay network.
    groups, managers = swarm_groups(platform.runtimes)

    def attempt() -> tuple[Cluster, list[str]]:
        with platform.sessions.begin() as db:
            image = images.image_named(db, user, request.image)
            allocation.lock_allocation(db)
            views = allocation.node_views(db, platform.settings)
            core.check_shape(views, shape, platform.settings.max_cluster_nodes)
            views = allocation.nodes_able(platform, views, [Feature.CLUSTER_NETWORKS, *allocation.needs(request.gpus > 0)],
                                          f"cluster {request.name} cannot be created")
            views = allocation.nodes_for_image(db, views, image, request.gpu_model, request.gpus)
            placements = core.place_cluster(views, shape, groups)
            model = placements[0].gpus[0].model if placements[0].gpus else request.gpu_model
            used = sorted({p.node for p in placements})

            ledger.check_can_afford(db, platform.settings, user, model, request.gpus * request.nodes * MILLI, used[0])
            _check_names_free(db, user, request.name, request.nodes)
            cluster = Cluster(
                id=secrets.token_hex(6), owner_id=user.id, name=request.name, members=request.nodes,
                gpus_per_member=request.gpus, gpu_model=model, image_id=image.id,
                network_driver="bridge" if len(used) == 1 else "overlay",
                network_node=used[0] if len(used) == 1 else managers[groups[used[0]]],
                master_port=core.MASTER_PORT,
            )
            statuses.set_status(cluster, ClusterStatus.LIVE)
            db.add(cluster)
            ids = []
            for rank, placement in enumerate(placements):
                instance = Instance(
                    id=secrets.token_hex(6), owner_id=user.id, name=f"{request.name}-{rank}",
                    node_name=placement.node, image_id=image.id, gpu_model=model, gpu_count=request.gpus,
                    gpu_milli=request.gpus * MILLI,
                    status=Status.CREATING, env=request.env, command=request.command,
                    data_disk_gb=request.data_disk_gb, jupyter_token=secrets.token_hex(24),
                    ssh_port=allocation.free_ssh_port(db, platform, placement.node),
                    cluster_id=cluster.id, cluster_rank=rank,
                )
                db.add(instance)
                db.flush()
                allocation.assign(db, instance.id, placement)
                db.add(InstanceEvent(instance_id=instance.id, from_status=None, to_status=Status.CREATING,
                                     cause=f"created by {user.name} as member {rank} of cluster {request.name}"))
                ids.append(instance.id)
            return cluster, ids

    cluster, ids = allocation.with_retries(attempt)
    platform.notify_changed()
    return cluster, ids


def _check_names_free(db: Session, user: User, name: str, count: int) -> None:
    live = select(Cluster.id).where(Cluster.owner_id == user.id, Cluster.name == name, Cluster.status != "released")
    if db.scalars(live).first():
        raise Conflict(f"name: you already have a cluster named {name!r}", field="name")
    wanted = core.member_hostnames(name, count)
    taken = db.scalars(select(Instance.name).where(Instance.owner_id == user.id, Instance.name.in_(wanted),
                                                   Instance.status != Status.RELEASED)).all()
    if taken:
        raise Conflict(f"name: the members would be called {wanted[0]}..{wanted[-1]}, but you already have "
                       f"an instance named {sorted(taken)[0]!r}", field="name")


# ---- acting on all members -----------------------------------------------------------


def start_cluster(platform: Platform, user: User, key: str) -> tuple[Cluster, list[str]]:
    """Start every stopped (or failed) member, or none: when one cannot get its GPUs
    back, the members started so far go back to stopped and the whole start fails."""
    with platform.sessions.begin() as db:
        cluster = _live(get_owned(db, user, key))
        waiting = [m for m in members(db, cluster.id) if m.status in (Status.STOPPED, Status.FAILED)]
        if not waiting:
            raise Conflict(f"cluster {cluster.name}: no member is stopped (they are "
                           f"{', '.join(sorted({m.status for m in members(db, cluster.id)}))})")
        views = {v.name: v for v in allocation.node_views(db, platform.settings)}
        short = []
        for member in waiting:  # look before acting: most refusals leave nothing to undo
            view = views.get(member.node_name)
            free = [g for g in (view.free if view else []) if g.model == member.gpu_model]
            if view is None:
                short.append(f"member {member.name}: node {member.node_name} is offline")
            elif len(free) < member.gpu_count:
                short.append(f"member {member.name} needs {member.gpu_count} {member.gpu_model} GPUs on node "
                             f"{member.node_name}, {len(free)} free")
            elif view:
                view.free = [g for g in view.free if g not in free[: member.gpu_count]]
        if short:
            raise Conflict(f"cluster {cluster.name} cannot start: {'; '.join(short)}; no member was started")
    started: list[str] = []
    try:
        for member in waiting:
            instances.request_start(platform, user, member.id)
            started.append(member.id)
    except DockyardError as exc:
        for instance_id in started:
            lifecycle.transition(platform, instance_id, Status.STARTING, Status.STOPPED,
                                 f"cluster start rolled back: member {member.name} could not start")
        raise Conflict(f"cluster {cluster.name} cannot start: member {member.name}: {exc.message}; "
                       f"no member was started") from None
    return cluster, started


def stop_cluster(platform: Platform, user: User, key: str) -> tuple[Cluster, list[str]]:
    with platform.sessions.begin() as db:
        cluster = _live(get_owned(db, user, key))
        running = [m for m in members(db, cluster.id) if m.status in (Status.RUNNING, Status.CREATING, Status.STARTING)]
    if not running:
        raise Conflict(f"cluster {cluster.name}: no member is running")
    stopped = []
    for member in running:
        try:
            instances.request_stop(platform, user, member.id)
            stopped.append(member.id)
        except Conflict:
            pass  # it changed meanwhile (its command ended, say): nothing to stop
    return cluster, stopped


def release_cluster(platform: Platform, user: User, key: str) -> tuple[Cluster, list[str]]:
    """Release every member; the network goes once the last member's container has."""
    with platform.sessions.begin() as db:
        cluster = get_owned(db, user, key)
        if cluster.status == "released":
            raise Conflict(f"cluster {cluster.name} is released already")
        statuses.change(db, Cluster, ClusterStatus.LIVE, ClusterStatus.RELEASING, Cluster.id == cluster.id)
        live = [m for m in members(db, cluster.id) if m.status != Status.RELEASED]
    for member in live:
        instances.request_release(platform, user, member.id)
    platform.notify_changed()
    return cluster, [m.id for m in live]


def _live(cluster: Cluster) -> Cluster:
    if cluster.status != "live":
        raise Conflict(f"cluster {cluster.name} is {cluster.status}")
    return cluster


def wait_for(platform: Platform, user: User, key: str, statuses: set[str], timeout: float) -> Cluster:
    def read() -> tuple[Cluster, str]:
        with platform.sessions.begin() as db:
            cluster = get_owned(db, user, key)
            return cluster, status_of(db, cluster)
    return platform.wait_until(read, lambda seen: seen[1] in statuses, timeout)[0]


# ---- engine side: for the driver and the reconciler ----------------------------------


def member_setup(platform: Platform, instance: Instance) -> MemberSetup:
    """The network (made if missing) and environment of a member, for its container."""
    with platform.sessions.begin() as db:
        cluster = db.get(Cluster, instance.cluster_id)
        nodes = sorted({m.node_name for m in members(db, cluster.id)})
    name = network_name(platform, cluster.id)
    if cluster.subnet is None:
        with _subnet_lock:
            with platform.sessions.begin() as db:
                cluster = db.get(Cluster, cluster.id)
                in_db = [c for c in db.scalars(select(Cluster.subnet).where(Cluster.status != "released",
                                                                            Cluster.subnet.is_not(None)))]
            if cluster.subnet is None:
                taken = in_db + [s for n in nodes for s in platform.runtime(n).taken_subnets()]
                subnet = core.pick_subnet(platform.settings.cluster_network_pool, 24, taken)
                with platform.sessions.begin() as db:
                    db.execute(update(Cluster).where(Cluster.id == cluster.id, Cluster.subnet.is_(None))
                               .values(subnet=subnet))
                    cluster = db.get(Cluster, cluster.id)
    with _subnet_lock:  # one creation per name at a time (Docker allows duplicate names)
        network = platform.runtime(cluster.network_node).ensure_cluster_network(
            name, cluster.subnet, cluster.network_driver,
            {**platform.labels, "dockyard.cluster": cluster.id}, platform.settings.cluster_network_encrypted)
    ips = core.member_ips(cluster.subnet, cluster.members)
    rank = instance.cluster_rank
    env = core.member_env(cluster.name, rank, cluster.members, cluster.gpus_per_member, ips, cluster.master_port)
    return MemberSetup(network=network, hostname=f"{cluster.name}-{rank}", ipv4_address=ips[rank], env=env,
                       hostfile=core.hostfile(cluster.name, cluster.members, cluster.gpus_per_member))


def swarm_groups(runtimes: dict) -> tuple[dict[str, str | None], dict[str, str]]:
    """Which swarm each node's engine is in (None: none, or one whose managers this
    platform does not reach), and for each swarm a node whose engine is a manager."""
    states = {}
    for node, runtime in runtimes.items():
        try:
            states[node] = runtime.swarm_state()
        except Exception:  # an engine that does not answer spans nothing
            states[node] = NO_SWARM
    managers = {s.cluster_id: node for node, s in sorted(states.items()) if s.manager and s.cluster_id}
    groups: dict[str, str | None] = {}
    for node, state in states.items():
        groups[node] = next((cid for cid, m in managers.items() if state.node_id in states[m].members), None)
    return groups, managers


def write_hostfile(engine: ContainerInstances, now: Held, setup: MemberSetup) -> None:
    engine.put_files(now, {core.HOSTFILE_PATH.lstrip("/"): (setup.hostfile.encode(), 0o644)})


def reap(platform: Platform) -> None:
    """Reconciler pass: a releasing cluster whose members are all released loses its
    network and becomes released. Idempotent; an engine that refuses is retried."""
    with platform.sessions.begin() as db:
        releasing = list(db.scalars(select(Cluster).where(Cluster.status == "releasing")))
        done = [c for c in releasing if all(m.status == Status.RELEASED for m in members(db, c.id))]
    for cluster in done:
        try:
            platform.runtime(cluster.network_node).remove_cluster_network(network_name(platform, cluster.id))
        except (DockyardError, RuntimeError_):
            continue
        with platform.sessions.begin() as db:
            statuses.change(db, Cluster, ClusterStatus.RELEASING, ClusterStatus.RELEASED, Cluster.id == cluster.id,
                            released_at=utcnow())
