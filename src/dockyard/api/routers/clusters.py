"""Clusters: K instances placed together on a private network of their own."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from pydantic import Field, field_validator
from sqlalchemy.orm import Session

from dockyard.api.deps import current_user, get_db, get_driver, get_platform
from dockyard.core.inputs import CreateInstance, Strict
from dockyard.core.placement import ANY_MODEL
from dockyard.db.models import Cluster, User
from dockyard.background.driver import Driver
from dockyard.services import cluster_views, clusters, fair_share
from dockyard.services.cluster_views import ClusterView
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


def _out(platform: Platform, cluster_id: str, viewer: User) -> ClusterView:
    with platform.sessions.begin() as db:
        return cluster_views.views(db, platform, [db.get(Cluster, cluster_id)], viewer)[0]


def _kick(driver: Driver, ids: list[str]) -> None:
    for instance_id in ids:
        driver.kick(instance_id)


@router.post("", response_model=ClusterView, status_code=201)
def create(body: CreateCluster, user: User = Depends(current_user), platform: Platform = Depends(get_platform),
           driver: Driver = Depends(get_driver)) -> ClusterView:
    """Place K members at once (all or nothing) on one node or across a swarm's nodes."""
    cluster, ids = clusters.create_cluster(platform, user, clusters.ClusterRequest(**body.model_dump()))
    _kick(driver, ids)
    return _out(platform, cluster.id, user)


@router.get("", response_model=list[ClusterView])
def list_all(all: bool = Query(False, description="include released clusters"), user: User = Depends(current_user),
             platform: Platform = Depends(get_platform), db: Session = Depends(get_db)) -> list[ClusterView]:
    return cluster_views.views(db, platform, clusters.list_clusters(db, user, include_released=all), user)


@router.get("/{key}", response_model=ClusterView)
def show(key: str, wait_for: list[str] = Query(default=[], description="block until the cluster's status is one of these"),
         timeout: float = Query(60, ge=0, le=600), user: User = Depends(current_user),
         platform: Platform = Depends(get_platform)) -> ClusterView:
    if wait_for:
        with platform.fair_share.place(user, fair_share.WAIT):
            cluster = clusters.wait_for(platform, user, key, set(wait_for), timeout)
    else:
        with platform.sessions.begin() as db:
            cluster = clusters.get_owned(db, user, key)
    return _out(platform, cluster.id, user)


@router.post("/{key}/stop", response_model=ClusterView)
def stop(key: str, user: User = Depends(current_user), platform: Platform = Depends(get_platform),
         driver: Driver = Depends(get_driver)) -> ClusterView:
    cluster, ids = clusters.stop_cluster(platform, user, key)
    _kick(driver, ids)
    return _out(platform, cluster.id, user)


@router.post("/{key}/start", response_model=ClusterView)
def start(key: str, user: User = Depends(current_user), platform: Platform = Depends(get_platform),
          driver: Driver = Depends(get_driver)) -> ClusterView:
    """Start every stopped member, or none (a member whose GPUs are taken fails it all)."""
    cluster, ids = clusters.start_cluster(platform, user, key)
    _kick(driver, ids)
    return _out(platform, cluster.id, user)


@router.delete("/{key}", response_model=ClusterView)
def release(key: str, user: User = Depends(current_user), platform: Platform = Depends(get_platform),
            driver: Driver = Depends(get_driver)) -> ClusterView:
    cluster, ids = clusters.release_cluster(platform, user, key)
    _kick(driver, ids)
    return _out(platform, cluster.id, user)
