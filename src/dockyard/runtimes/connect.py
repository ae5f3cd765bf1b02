"""A node's backend, made from its configuration: the one place that knows every kind."""

from __future__ import annotations

from pathlib import Path

from dockyard.config import NodeConfig, Settings
from dockyard.core.validation import DEFAULT_DATA_DISK_GB
from dockyard.runtimes.base import Runtime
from dockyard.runtimes.disks import LoopDisks
from dockyard.runtimes.docker import DockerRuntime
from dockyard.runtimes.fake import FakeRuntime


def connect(config: NodeConfig, settings: Settings, disk_root: Path) -> Runtime:
    """The backend `config.runtime` names, connected and probed; `disk_root`: where the
    node's sized disks live on this host, if it has them."""
    if config.runtime == "fake":
        return FakeRuntime(config.name, images_on_demand=True)
    disks = (LoopDisks(disk_root, config.url, spare_size_gb=DEFAULT_DATA_DISK_GB) if config.sized_disks else None)
    runtime = DockerRuntime(config, settings.network_pool, settings.network_prefix, busybox=settings.tools_busybox,
                            disks=disks, ping_timeout_s=settings.node_ping_timeout_s)
    runtime.probe_ulimits(settings.gpu_probe_image)
    runtime.probe_disk_limit(settings.gpu_probe_image)
    return runtime
