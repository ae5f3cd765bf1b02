"""What the API shows of clusters (the models of its answers): each with its members' own
views (instance_views), its price and cost as the sums of theirs, built for many clusters
at once."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.core.clusters import cluster_status, member_ips
from dockyard.core.states import Status
from dockyard.db.models import Cluster, Image, Instance, User
from dockyard.services import instance_views
from dockyard.services.platform import Platform


@dataclass(frozen=True)
class MemberView:
    rank: int
    id: str
    name: str
    node: str
    status: str
    status_reason: str | None
    address: str | None
    gpus: list[int]
    ssh_command: str | None


@dataclass(frozen=True)
class ClusterView:
    id: str
    name: str
    owner: str
    status: str
    nodes: int
    gpus_per_node: int
    gpu_model: str
    image: str
    network: str  # bridge (one engine) or overlay (Docker swarm, across engines)
    subnet: str | None
    master_addr: str
    master_port: int
    spans: list[str]  # the nodes (hosts) the members are on
    members: list[MemberView]
    created_at: datetime
    price_per_hour: str
    cost_so_far: str


def views(db: Session, platform: Platform, found: list[Cluster], viewer: User) -> list[ClusterView]:
    """The views of `found`, in its order, in a fixed number of queries whatever the
    number of clusters and members: the members' own views are built all at once."""
    if not found:
        return []
    rows = list(db.scalars(select(Instance).where(Instance.cluster_id.in_([c.id for c in found]))
                           .order_by(Instance.cluster_id, Instance.cluster_rank)))
    member_views = {v.id: v for v in instance_views.views(platform, db, rows, viewer)}
    by_cluster: dict[str, list[Instance]] = defaultdict(list)
    for member in rows:
        by_cluster[member.cluster_id].append(member)
    owners = dict(db.execute(select(User.id, User.name).where(User.id.in_({c.owner_id for c in found}))).all())
    image_names = dict(db.execute(select(Image.id, Image.name).where(Image.id.in_({c.image_id for c in found}))).all())
    out = []
    for cluster in found:
        members = by_cluster.get(cluster.id, [])
        ips = member_ips(cluster.subnet, cluster.members) if cluster.subnet else [None] * cluster.members
        # As a sum of the members' shown amounts: what a reader adding them up gets.
        price = sum((Decimal(member_views[m.id].price_per_hour) for m in members
                     if m.status in (Status.RUNNING, Status.STOPPING)), Decimal(0))
        spent = sum((Decimal(member_views[m.id].cost_so_far) for m in members), Decimal(0))
        status = "released" if cluster.status == "released" else cluster_status([m.status for m in members])
        out.append(ClusterView(
            id=cluster.id, name=cluster.name, owner=owners[cluster.owner_id], status=status,
            nodes=cluster.members, gpus_per_node=cluster.gpus_per_member, gpu_model=cluster.gpu_model,
            image=image_names[cluster.image_id], network=cluster.network_driver, subnet=cluster.subnet,
            master_addr=f"{cluster.name}-0", master_port=cluster.master_port,
            spans=sorted({m.node_name for m in members}),
            members=[MemberView(rank=m.cluster_rank, id=m.id, name=m.name, node=m.node_name, status=m.status,
                               status_reason=m.status_reason, address=ips[m.cluster_rank],
                               gpus=[g.index for g in member_views[m.id].gpus],
                               ssh_command=member_views[m.id].ssh_command) for m in members],
            created_at=cluster.created_at, price_per_hour=str(price), cost_so_far=str(spent),
        ))
    return out
