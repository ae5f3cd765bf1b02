"""Monitoring: an instance's recent samples and the advisor's findings."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from dockyard.api.deps import current_user, get_platform
from dockyard.db.models import User
from dockyard.services.metrics import instance_metrics
from dockyard.services.platform import Platform

router = APIRouter(prefix="/instances", tags=["monitoring"])


class GpuOut(BaseModel):
    index: int
    uuid: str
    model: str
    simulated: bool  # simulated GPUs have no utilisation: their samples carry nulls


class GpuSampleOut(BaseModel):
    uuid: str
    util_percent: float | None
    memory_used: int | None
    memory_total: int | None


class SampleOut(BaseModel):
    at: float  # Unix time
    cpu_percent: float | None  # of the instance's CPU share; null for the first sample after a start
    memory_used: int
    memory_limit: int
    gpus: list[GpuSampleOut]


class DiskOut(BaseModel):
    at: float
    used: int
    total: int


class FindingOut(BaseModel):
    rule: str
    severity: str  # critical, warning, info
    params: dict[str, str]
    message: str
    action: str


class MetricsOut(BaseModel):
    id: str
    name: str
    status: str
    now: float  # the server's clock, for the charts' time axis
    interval_s: float
    window_s: float
    gpus: list[GpuOut]
    samples: list[SampleOut]  # oldest first
    disk: DiskOut | None
    system_disk: DiskOut | None = Field(None, description="written over its image; total: the operator's limit "
                                                           "(0: none), stopped past it where the engine cannot refuse")
    findings: list[FindingOut]  # most urgent first


@router.get("/{key}/metrics", response_model=MetricsOut)
def metrics(key: str, request: Request, user: User = Depends(current_user),
            platform: Platform = Depends(get_platform)) -> dict:
    """The last hour (`metrics_window_s`) of samples, kept in the server's memory, and what
    the advisor makes of them. The owner's only: anyone else gets 404."""
    return instance_metrics(platform, request.app.state.metrics.store, user, key)
