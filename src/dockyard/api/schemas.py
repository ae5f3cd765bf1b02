"""What the REST API returns, and the bodies it alone accepts (the rest: core/inputs.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

# The bodies the API accepts, shared with the console's forms (core/inputs.py).
from dockyard.core.inputs import Strict


class LoginRequest(Strict):
    user: str = Field(max_length=64)
    password: str = Field(max_length=1024)
    scope: Literal["all", "read", "instances", "billing"] = Field(
        default="all", description="all; read (GET only); instances; billing")
    expires_days: int | None = Field(default=None, ge=1, le=3650,
                                     description="default: the server's token_lifetime_days")
    name: str | None = Field(default=None, max_length=64, description="a label for `dockyard tokens ls`")


class TokenOut(BaseModel):
    token: str
    user: str
    is_admin: bool
    id: int
    scope: str
    expires_at: datetime | None


class TokenInfo(BaseModel):
    """A token as listed: never the token itself."""

    id: int
    name: str | None
    scope: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    current: bool = False


class PasswordChange(Strict):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(min_length=8, max_length=1024)


class UserOut(BaseModel):
    name: str
    is_admin: bool


class KeyOut(BaseModel):
    name: str
    fingerprint: str
    key_type: str
    bits: int
    created_at: datetime


class MigrateInstance(Strict):
    node: str = Field(max_length=64, description="the node to move to")


class ExecRequest(Strict):
    command: list[str] = Field(min_length=1, max_length=256)
    # Stopped (and its output ended) after this long; the server's cap applies too.
    timeout_s: float = Field(default=600, gt=0, le=86400)
    # Stream the output as it comes (NDJSON lines: {"output": ...}, then one
    # {"exit_code", "timed_out", "truncated"}), instead of one answer at the end.
    stream: bool = False


class ExecOut(BaseModel):
    exit_code: int  # -1: stopped at its deadline or its output cap
    output: str
    timed_out: bool = False
    truncated: bool = False


class GpuRef(BaseModel):
    index: int
    uuid: str
    model: str
    simulated: bool


class InstanceOut(BaseModel):
    id: str
    name: str
    owner: str
    status: str
    status_reason: str | None
    node: str
    image: str
    gpu_model: str
    gpu_count: int
    gpu_share: str | None = None
    no_gpu: bool
    gpus: list[GpuRef]
    # Another user's values (an admin's view) are left out: only the names show.
    env: dict[str, str]
    secret_env_names: list[str] = []
    command: str | None
    data_disk_gb: int
    env_check: dict | None
    ssh_command: str | None = None
    last_ssh_at: datetime | None = None
    last_jupyter_at: datetime | None = None
    auto_stop_idle_minutes: int | None = None
    auto_stop_max_minutes: int | None = None
    # while queued, its place (1 = next) among the waiters for its node and GPU model.
    queue_position: int | None = None
    queued_at: datetime | None = None
    queue_deadline: datetime | None = None
    auto_stop_gpu_idle_minutes: int | None = None
    auto_stop_gpu_idle_percent: int | None = None
    auto_stop_at: datetime | None = None
    auto_stop_on_exit: bool = False
    auto_stop_when_exits: str | None = None
    # A warned stop: when it is due unless kept running (POST .../keep); and why a rule cannot fire.
    auto_stop_pending: str | None = None
    auto_stop_notes: list[str] = Field(default_factory=list)
    # Only in the answer to the create that asked for it: never shown again.
    ssh_password: str | None = None
    created_at: datetime
    started_at: datetime | None
    updated_at: datetime
    # Billing: the price per hour in its current mode, and what was charged so far.
    price_per_hour: str | None = None
    cost_so_far: str | None = None
    # Volumes (docs/volumes.md): mounted ones ("NAME:/path"), and what a release does.
    volumes: list[str] = []
    keep_data_on_release: bool = True
    auto_release_days: int | None = None


class VolumeResize(Strict):
    size_gb: int = Field(strict=True)


class VolumeOut(BaseModel):
    id: str
    name: str
    owner: str
    node: str
    size_gb: int
    used_bytes: int | None = None  # measured on its disk (shown by `volumes show`)
    status: str
    status_reason: str | None
    instance: str | None  # the name of the instance mounting it
    mount_path: str | None
    source_instance: str | None
    created_at: datetime
    deleted_at: datetime | None


class EventOut(BaseModel):
    at: datetime
    from_status: str | None
    to_status: str
    cause: str


class ShareOfferOut(BaseModel):
    share: str = Field(description="what to ask for: gpu_share (CLI --gpus), e.g. 0.5 or 1g.18gb")
    gpu_fraction: float = Field(description="the part of the GPU's price per hour it costs")
    free: int = Field(description="how many of this share can be rented now")


class MarketRow(BaseModel):
    node: str
    model: str
    memory_mb: int
    total: int
    free: int
    simulated: bool
    driver_version: str | None
    cuda_version: str | None
    online: bool
    sharing: str | None = Field(default=None, description="time-slicing, mps or mig; null: whole GPUs only")
    isolation: str | None = Field(default=None, description="what the sharing mode keeps apart between shares")
    shares: list[ShareOfferOut] = Field(default_factory=list)


class ImageOut(BaseModel):
    name: str
    ref: str
    kind: str
    status: str
    status_reason: str | None
    public: bool
    framework: str | None
    framework_version: str | None
    cuda: str | None
    cudnn: str | None
    python: str | None
    os: str | None
    min_driver: int
    is_default: bool
    description: str | None
    digest: str | None
    size_bytes: int | None
    nodes: list[str] = []
    packages: dict[str, str] = Field(default_factory=dict, description="the locked Python stack: name -> version")
    stack_lock_sha256: str | None = None
    created_at: datetime


class OperationOut(BaseModel):
    """A long operation in progress (services/operations.py); gone some minutes after its end."""

    id: str
    kind: str
    target: str
    phase: str
    percent: float | None
    lines: list[str]
    instance_id: str | None
    done: bool
    error: str | None
    started_at: datetime
    version: int = Field(description="grows with every change: of two views, the higher is the newer")


class CloneOut(BaseModel):
    instance: InstanceOut
    operation: OperationOut


class MigrateOut(BaseModel):
    instance: InstanceOut
    operation: OperationOut


class AuditOut(BaseModel):
    at: datetime
    actor: str
    action: str
    target: str
    detail: str


class AuditPage(BaseModel):
    total: int
    entries: list[AuditOut]


class CacheRow(BaseModel):
    node: str
    image: str
    ref: str
    digest: str | None
    checked_at: datetime


class NodeOut(BaseModel):
    name: str
    url: str
    online: bool
    status_reason: str | None
    cpus: float
    memory_bytes: int
    cpus_per_gpu: float
    memory_per_gpu_bytes: int
    driver_version: str | None
    cuda_version: str | None
    placement_policy: str = Field("dockyard", description="the placement policy of the node's pool")


class MirrorsIn(Strict):
    """Package mirrors; an empty or missing field is "not set". URLs must be http(s)."""

    pip_index_url: str | None = Field(default=None, max_length=4096)
    apt_mirror_url: str | None = Field(default=None, max_length=4096)
    conda_channel_url: str | None = Field(default=None, max_length=4096)
    ca_bundle: str | None = Field(default=None, max_length=512 * 1024, description="PEM certificates")


class MirrorsOut(BaseModel):
    pip_index_url: str | None
    apt_mirror_url: str | None
    conda_channel_url: str | None
    ca_bundle: str | None


class MirrorsView(BaseModel):
    """What a user's new instances get: the operator's site settings and the user's additions."""

    site: MirrorsOut
    mine: MirrorsOut
