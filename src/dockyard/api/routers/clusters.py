"""Clusters: K instances placed together on a private network of their own."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.api.deps import current_user, get_db, get_driver, get_platform
from dockyard.core.inputs import CreateInstance, Strict
from dockyard.core.clusters import cluster_status, member_ips
from dockyard.core.placement import ANY_MODEL
from dockyard.core.states import Status
from dockyard.db.models import Cluster, Image, Instance, User
from dockyard.background.driver import Driver
from dockyard.services import clusters, fair_share, instance_views
from dockyard.services.platform import Platform

router = APIRouter(prefix="/clusters", tags=["clusters"])


class CreateCluster(Strict):
    name: str = Field(min_length=1, max_length=64, description="members are called NAME-0, NAME-1, ...")
    image: str = Field(min_length=1, max_length=255)
    nodes: int = Field(description="K: how many members (instances)", ge=-1000, le=1000)
    gpus: int = Field(default=1, ge=0, le=64, description="N: GPUs per member")
    gpu_model: str = Field(default=ANY_MODEL, min_length=1, max_length=64)
    env: dict[str, str] = Field(default_factory=dict, max_length=128)
    command: str | None = Field(default=None, max_length=8192, description="every member's start command")
    data_disk_gb: int = Field(default=50, ge=1, le=65536)

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        return CreateInstance._env_names(env)


class MemberOut(BaseModel):
    rank: int
    id: str
    name: str
    node: str
    status: str
    status_reason: str | None
    address: str | None
    gpus: list[int]
    ssh_command: str | None


class ClusterOut(BaseModel):
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
    members: list[MemberOut]
    created_at: datetime
    price_per_hour: str | None = None
    cost_so_far: str | None = None


def cluster_outs(db: Session, platform: Platform, found: list[Cluster], viewer: User) -> list[ClusterOut]:
    """The answers for `found`, in its order, in a fixed number of queries whatever the
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
        out.append(ClusterOut(
            id=cluster.id, name=cluster.name, owner=owners[cluster.owner_id], status=status,
            nodes=cluster.members, gpus_per_node=cluster.gpus_per_member, gpu_model=cluster.gpu_model,
            image=image_names[cluster.image_id], network=cluster.network_driver, subnet=cluster.subnet,
            master_addr=f"{cluster.name}-0", master_port=cluster.master_port,
            spans=sorted({m.node_name for m in members}),
            members=[MemberOut(rank=m.cluster_rank, id=m.id, name=m.name, node=m.node_name, status=m.status,
                               status_reason=m.status_reason, address=ips[m.cluster_rank],
                               gpus=[g.index for g in member_views[m.id].gpus],
                               ssh_command=member_views[m.id].ssh_command) for m in members],
            created_at=cluster.created_at, price_per_hour=str(price), cost_so_far=str(spent),
        ))
    return out


def _out(platform: Platform, cluster_id: str, viewer: User) -> ClusterOut:
    with platform.sessions.begin() as db:
        return cluster_outs(db, platform, [db.get(Cluster, cluster_id)], viewer)[0]


def _kick(driver: Driver, ids: list[str]) -> None:
    for instance_id in ids:
        driver.kick(instance_id)


@router.post("", response_model=ClusterOut, status_code=201)
def create(body: CreateCluster, user: User = Depends(current_user), platform: Platform = Depends(get_platform),
           driver: Driver = Depends(get_driver)) -> ClusterOut:
    """Place K members at once (all or nothing) on one node or across a swarm's nodes."""
    cluster, ids = clusters.create_cluster(platform, user, clusters.ClusterRequest(**body.model_dump()))
    _kick(driver, ids)
    return _out(platform, cluster.id, user)


@router.get("", response_model=list[ClusterOut])
def list_all(all: bool = Query(False, description="include released clusters"), user: User = Depends(current_user),
             platform: Platform = Depends(get_platform), db: Session = Depends(get_db)) -> list[ClusterOut]:
    return cluster_outs(db, platform, clusters.list_clusters(db, user, include_released=all), user)


@router.get("/{key}", response_model=ClusterOut)
def show(key: str, wait_for: list[str] = Query(default=[], description="block until the cluster's status is one of these"),
         timeout: float = Query(60, ge=0, le=600), user: User = Depends(current_user),
         platform: Platform = Depends(get_platform)) -> ClusterOut:
    if wait_for:
        with platform.fair_share.place(user, fair_share.WAIT):
            cluster = clusters.wait_for(platform, user, key, set(wait_for), timeout)
    else:
        with platform.sessions.begin() as db:
            cluster = clusters.get_owned(db, user, key)
    return _out(platform, cluster.id, user)


@router.post("/{key}/stop", response_model=ClusterOut)
def stop(key: str, user: User = Depends(current_user), platform: Platform = Depends(get_platform),
         driver: Driver = Depends(get_driver)) -> ClusterOut:
    cluster, ids = clusters.stop_cluster(platform, user, key)
    _kick(driver, ids)
    return _out(platform, cluster.id, user)


@router.post("/{key}/start", response_model=ClusterOut)
def start(key: str, user: User = Depends(current_user), platform: Platform = Depends(get_platform),
          driver: Driver = Depends(get_driver)) -> ClusterOut:
    """Start every stopped member, or none (a member whose GPUs are taken fails it all)."""
    cluster, ids = clusters.start_cluster(platform, user, key)
    _kick(driver, ids)
    return _out(platform, cluster.id, user)


@router.delete("/{key}", response_model=ClusterOut)
def release(key: str, user: User = Depends(current_user), platform: Platform = Depends(get_platform),
            driver: Driver = Depends(get_driver)) -> ClusterOut:
    cluster, ids = clusters.release_cluster(platform, user, key)
    _kick(driver, ids)
    return _out(platform, cluster.id, user)
