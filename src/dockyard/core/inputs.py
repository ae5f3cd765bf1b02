"""What a request may give, checked before any service runs: the REST API's bodies, and
the console's forms, which are read into the same models so both refuse alike."""

from __future__ import annotations

from datetime import datetime

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


class PatchInstance(AutoStopRules):
    """The fields given change; those left out stay as they are."""

    auto_stop_when_exits: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._+-]{1,64}$",
                                             description="stop when this running process exits; null: never")
    keep_data_on_release: bool | None = None
    auto_release_days: int | None = Field(default=None, strict=True,
                                          description="days stopped before a release; null: the operator's")


class VolumeIn(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    size_gb: int = Field(strict=True, description="its size; writes past it fail with ENOSPC")
    node: str | None = Field(default=None, max_length=64, description="default: the local node")


class ImageIn(Strict):
    ref: str = Field(pattern=IMAGE_REF_PATTERN)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class SaveImage(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}(:[A-Za-z0-9_.-]{1,64})?$",
                      description="NAME[:TAG], lower case")


class CloneInstance(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="the clone's name")
    gpu_count: int | None = Field(default=None, ge=0, le=64, description="default: the source's; 0 for none")
