"""The interface every compute backend implements, and the data it speaks in."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Callable, Iterator, Protocol

from dockyard.core.catalog import CatalogEntry
from dockyard.core.gpus import GpuFacts
from dockyard.core.metrics import CpuCounters

# Marks the platform's short-lived helper containers: no instance's, never an orphan.
HELPER_LABEL = "dockyard.helper"


# Every instance sees the platform's own programs read-only at TOOLS_MOUNT, whatever its
# image holds (part of each runtime's contract): BUSYBOX there is a static busybox that the
# platform's scripts run by absolute path, so a tenant who replaces `sh` or `cat` in the
# image changes nothing the platform relies on.
TOOLS_MOUNT = "/.dockyard"
BUSYBOX = f"{TOOLS_MOUNT}/busybox"


class Feature(StrEnum):
    """Abilities a backend may lack. Each runtime says why it lacks one (`Runtime.lacks`),
    so a request that needs it is refused with that reason before anything is recorded."""

    MIGRATION = "migration"  # its disks stream to another node of the same kind
    SIZED_DISKS = "sized disks"  # a data disk or volume holds at most its size
    SYSTEM_DISK_LIMIT = "system disk limit"  # the engine itself holds a container's own layer to a size
    GPU_PINNING = "GPU pinning"  # an instance gets the GPUs the platform chose, by UUID
    KEPT_SYSTEM_DISK = "kept system disk"  # a stop keeps what the user installed
    SAVED_IMAGES = "saved images"  # an instance's system disk saved as an image
    DISK_CLONES = "disk clones"  # an instance's disks copied for a clone
    CLUSTER_NETWORKS = "cluster networks"  # a private network joining a cluster's members
    HOST_SSH_PORTS = "host SSH ports"  # SSH to an instance through a port on the node
    IMAGE_BUILDS = "image builds"  # a catalog image built on the node from its recipe
    IMAGE_CACHE = "image cache"  # images pulled onto the node ahead of the creates that use them


class RuntimeError_(Exception):
    """An engine refused or failed an operation."""


class PortTaken(RuntimeError_):
    """A host port the container publishes is held by something else on the node."""


class ContainerGone(RuntimeError_):
    """The container that holds an instance's system disk is not on its node any more."""


@dataclass(frozen=True)
class SwarmState:
    """Where a node's engine stands in a swarm: what lets a cluster span engines."""

    node_id: str | None  # this engine's swarm node id, None when not in an active swarm
    manager: bool
    cluster_id: str | None  # the swarm's id, known on managers only
    members: frozenset[str] = frozenset()  # node ids in the swarm, known on managers only


NO_SWARM = SwarmState(None, False, None)


@dataclass
class ContainerSpec:
    name: str
    image: str
    command: list[str] | None
    env: dict[str, str]
    labels: dict[str, str]
    hostname: str
    network: str  # network id
    volumes: dict[str, str]  # volume name -> mount point
    ports: dict[int, tuple[str, int]] = field(default_factory=dict)  # container port -> (host ip, host port)
    gpu_uuids: list[str] = field(default_factory=list)  # GPU or MIG instance UUIDs
    real_gpus: bool = False  # device request for gpu_uuids (else env values only)
    # An MPS client of its GPU's daemon (core/sharing.py): it joins the daemon's IPC
    # namespace ("container:<daemon>"), and has no /dev/shm size of its own then.
    ipc_mode: str | None = None
    nano_cpus: int = 0
    memory_bytes: int = 0
    pids_limit: int = 0
    shm_bytes: int = 0
    system_disk_gb: int = 0  # the container's own layer at most this (0: no limit)
    # names the container answers to on `network`, and a fixed address there.
    aliases: list[str] = field(default_factory=list)
    ipv4_address: str | None = None


@dataclass
class ContainerInfo:
    id: str
    name: str
    status: str  # Docker's: created, running, exited, dead, paused, restarting
    labels: dict[str, str]
    exit_code: int | None = None
    error: str | None = None
    oom_killed: bool = False
    ip: str | None = None  # on its (first) network

    @property
    def running(self) -> bool:
        return self.status in ("running", "restarting", "paused")


@dataclass
class ImageInfo:
    id: str
    size_bytes: int
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class HostResources:
    cpus: float
    memory_bytes: int


@dataclass
class ContainerStats:
    """A running container's resource use at one moment (see core/metrics.py)."""

    cpu: CpuCounters
    memory_used: int  # without the page cache the kernel can drop
    memory_limit: int


class ExecStream(Protocol):
    """A command's output as it comes; `close` stops the command if it still runs."""

    exit_code: int | None  # after the end; None when the command was stopped
    timed_out: bool
    truncated: bool

    def __iter__(self) -> Iterator[bytes]: ...
    def close(self) -> None: ...


class Runtime(Protocol):
    def alive(self) -> bool: ...  # the engine answers, within a short deadline
    def resources(self) -> HostResources: ...
    def image_exists(self, ref: str) -> bool: ...
    def image_info(self, ref: str) -> ImageInfo | None: ...
    def ensure_image(self, ref: str, on_progress: Callable[[str], None] | None = None) -> None: ...
    def build_image(self, entry: CatalogEntry, recipes: Path, ca_bundle: Path | None,
                    on_progress: Callable[[str], None]) -> None: ...
    def discover_gpus(self, probe_image: str) -> list[GpuFacts]: ...  # the node's real GPUs
    def ensure_network(self, name: str, labels: dict[str, str]) -> str: ...
    # A cluster's network: a bridge on one node, an overlay across a swarm's nodes.
    def swarm_state(self) -> SwarmState: ...
    def taken_subnets(self) -> list[str]: ...
    def ensure_cluster_network(self, name: str, subnet: str, driver: str, labels: dict[str, str],
                               encrypted: bool = ...) -> str: ...
    def remove_cluster_network(self, name: str) -> None: ...  # missing is fine
    # before_start: a container start follows (work it would trigger may wait until after it).
    def ensure_volume(self, name: str, labels: dict[str, str], size_gb: int | None = None,
                      before_start: bool = ...) -> None: ...
    def remove_volume(self, name: str) -> None: ...
    def resize_volume(self, name: str, size_gb: int) -> None: ...
    def volume_usage(self, name: str) -> tuple[int, int] | None: ...
    def list_volumes(self, labels: dict[str, str]) -> list[str]: ...
    def copy_volume(self, source: str, target: str, image: str, name: str, labels: dict[str, str]) -> None: ...
    def create(self, spec: ContainerSpec) -> str: ...
    def read_file(self, container_id: str, path: str, limit: int = ...) -> bytes | None: ...
    def start(self, container_id: str) -> None: ...
    def stop(self, container_id: str, timeout: int) -> None: ...
    def remove(self, container_id: str, with_volumes: bool = ...) -> None: ...
    def inspect(self, container_id: str) -> ContainerInfo | None: ...
    def list(self, labels: dict[str, str]) -> list[ContainerInfo]: ...
    def logs(self, container_id: str, tail: int, follow: bool, max_bytes: int = ...) -> Iterator[bytes]: ...
    def exec(self, container_id: str, command: list[str], timeout_s: float = ...,
             max_bytes: int = ...) -> tuple[int, bytes]: ...
    def exec_stream(self, container_id: str, command: list[str], timeout_s: float, max_bytes: int,
                    fixed_path: bool = ...) -> "ExecStream": ...
    def tool(self, container_id: str, args: list[str], timeout_s: float = ...,
             max_bytes: int = ...) -> tuple[int, bytes]: ...
    def put_files(self, container_id: str, directory: str, files: dict[str, tuple[bytes, int]],
                  parent: str, dir_mode: int = ..., dirs: dict[str, int] | None = ...) -> None: ...
    def stats(self, container_id: str) -> ContainerStats | None: ...  # None: not running
    def lacks(self, feature: Feature) -> str | None: ...  # why this node cannot, or None when it can
    def system_disk_used(self, container_id: str) -> int | None: ...  # bytes of its own layer; None: gone
    # Free bytes where the node keeps containers (read inside `container_id`, a running one
    # of it, where the node cannot be read directly); None: cannot tell.
    def storage_free(self, container_id: str | None = None) -> int | None: ...
    def commit(self, container_id: str, repository: str, tag: str, labels: dict[str, str] | None = None) -> str: ...
    def save_image(self, container_id: str, repository: str, tag: str, labels: dict[str, str]) -> str: ...
    # The container's system disk as an image to start a new container from (at most
    # `max_layers` deep); returns its reference.
    def keep_system_disk(self, container_id: str, repository: str, tag: str, max_layers: int,
                         labels: dict[str, str] | None = ...) -> str: ...
    def list_images(self, labels: dict[str, str]) -> list[str]: ...
    def remove_image(self, ref: str) -> None: ...
    def ensure_mps_daemon(self, name: str, gpu_uuid: str, image: str, volume: str, labels: dict[str, str]) -> None: ...
