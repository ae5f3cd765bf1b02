"""stopping -> stopped: the container stops (its disks stay); its GPUs are returned."""

from __future__ import annotations

from dockyard.background.driver.context import Context
from dockyard.core.states import Status
from dockyard.db.models import Instance
from dockyard.runtimes.base import ContainerGone
from dockyard.services.lifecycle import transition


def stop(ctx: Context, instance: Instance, status: Status) -> None:
    platform = ctx.platform
    runtime = platform.runtime(instance.node_name)
    if instance.container_id:
        if runtime.inspect(instance.container_id) is None:
            raise ContainerGone("the instance's container (its system disk) vanished from the node")
        runtime.stop(instance.container_id, timeout=platform.settings.stop_timeout_s)
    transition(platform, instance.id, status, Status.STOPPED, "container stopped; GPUs returned")
