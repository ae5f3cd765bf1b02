"""What the REST API accepts and returns."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dockyard.core.autostop import MAX_MINUTES
from dockyard.core.placement import ANY_MODEL
from dockyard.core.validation import DEFAULT_DATA_DISK_GB, IMAGE_REF_PATTERN, NAME_PATTERN, is_valid_env_name


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def policy_minutes(description: str):
    """An auto-stop policy field: whole minutes, 1 to a week, or null for never."""
    return Field(default=None, ge=1, le=MAX_MINUTES, strict=True, description=description)


IDLE_HELP = "stop after this many minutes without SSH or Jupyter activity; null: never"
MAX_HELP = "stop after this many minutes running since the last start or keep-running; null: never"
GPU_IDLE_HELP = "stop after this many minutes with every GPU under auto_stop_gpu_idle_percent busy; null: never"


class AutoStopRules(Strict):
    """The auto-stop rules a create or a change may give (core/autostop.py). Operator
    limits (services/autostop.py) apply on top of these bounds."""

    auto_stop_idle_minutes: int | None = policy_minutes(IDLE_HELP)
    auto_stop_max_minutes: int | None = policy_minutes(MAX_HELP)
    auto_stop_gpu_idle_minutes: int | None = policy_minutes(GPU_IDLE_HELP)
    auto_stop_gpu_idle_percent: int | None = Field(default=None, ge=0, le=100, strict=True,
                                                   description="the GPU-idle threshold, 0-100 %; null: 5")
    auto_stop_at: datetime | None = Field(default=None, description="stop at this time (with its zone); null: never")
    auto_stop_on_exit: bool | None = Field(default=None, strict=True, description="stop when the start command exits")


# the start queue (docs/queue.md).
QUEUE_HELP = "when the GPUs are taken, wait in line (status queued) and start by itself when they are free"
QUEUE_TIMEOUT_HELP = "leave the queue (back to stopped) after this many minutes, 1 to a week; null: never"


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


class CreateInstance(AutoStopRules):
    image: str = Field(min_length=1, max_length=255)
    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    gpu_model: str = Field(default=ANY_MODEL, min_length=1, max_length=64)
    gpu_count: int = Field(default=1, ge=0, le=64)
    gpu_share: str | None = Field(default=None, min_length=1, max_length=32,
                                  description="part of one GPU (gpu_count 1): 0.5, 0.25 or a MIG profile such as "
                                              "1g.18gb; the market lists what is offered")
    env: dict[str, str] = Field(default_factory=dict, max_length=128)
    secret_env: dict[str, str] = Field(default_factory=dict, max_length=128,
                                       description="passed to the container, stored encrypted, never shown again")
    command: str | None = Field(default=None, max_length=8192)
    data_disk_gb: int = Field(default=DEFAULT_DATA_DISK_GB, ge=1, le=65536)
    ssh_password: bool = Field(default=False, description="also allow root password login (shown once)")
    auto_stop_idle_minutes: int | None = policy_minutes(IDLE_HELP)
    auto_stop_max_minutes: int | None = policy_minutes(MAX_HELP)
    queue: bool = Field(default=False, description=QUEUE_HELP)
    queue_timeout_minutes: int | None = Field(default=None, description=QUEUE_TIMEOUT_HELP)
    volumes: list[str] = Field(default_factory=list, max_length=16,
                               description="NAME mounts your volume as the data disk, NAME:/path elsewhere")
    keep_data_on_release: bool = Field(default=True, description="a release keeps the data disk as a volume")
    auto_release_days: int | None = Field(default=None, strict=True,
                                          description="release after this many days stopped (at most the operator's)")

    @field_validator("env", "secret_env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for key, value in env.items():
            if not is_valid_env_name(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if len(value) > 8192 or "\x00" in value:
                raise ValueError(f"the value of {key} is too long or holds a NUL byte")
        return env


class KeyIn(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    public_key: str = Field(min_length=1, max_length=16384)


class KeyOut(BaseModel):
    name: str
    fingerprint: str
    key_type: str
    bits: int
    created_at: datetime


class StartInstance(Strict):
    no_gpu: bool = False
    gpu_count: int | None = Field(default=None, description="resize: this many GPUs, for this and later starts")
    queue: bool = Field(default=False, description=QUEUE_HELP)
    queue_timeout_minutes: int | None = Field(default=None, description=QUEUE_TIMEOUT_HELP)
    # (docs/migrate.md) move to a node with free GPUs of its model, then start.
    migrate: bool = False
    node: str | None = Field(default=None, max_length=64, description="with migrate: the node; default: the best fit")

    @model_validator(mode="after")
    def _migrate_options(self) -> "StartInstance":
        if self.migrate and self.no_gpu:
            raise ValueError("migrate: give migrate or no_gpu, not both (a migration starts with GPUs)")
        if self.migrate and (self.queue or self.gpu_count is not None):
            raise ValueError("migrate: a migration starts with its own GPUs, neither queued nor resized")
        if self.node is not None and not self.migrate:
            raise ValueError("node: only with migrate")
        return self


class MigrateInstance(Strict):
    node: str = Field(max_length=64, description="the node to move to")


class PatchInstance(AutoStopRules):
    """The fields given change; those left out stay as they are."""

    auto_stop_when_exits: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._+-]{1,64}$",
                                             description="stop when this running process exits; null: never")
    keep_data_on_release: bool | None = None
    auto_release_days: int | None = Field(default=None, strict=True,
                                          description="days stopped before a release; null: the operator's")


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


class VolumeIn(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    size_gb: int = Field(strict=True, description="its size; writes past it fail with ENOSPC")
    node: str | None = Field(default=None, max_length=64, description="default: the local node")


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


class ImageIn(Strict):
    ref: str = Field(pattern=IMAGE_REF_PATTERN)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


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


class SaveImage(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}(:[A-Za-z0-9_.-]{1,64})?$",
                      description="NAME[:TAG], lower case")


class CloneInstance(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="the clone's name")
    gpu_count: int | None = Field(default=None, ge=0, le=64, description="default: the source's; 0 for none")


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
