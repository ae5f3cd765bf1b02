"""stopping -> stopped: the container stops (its disks stay); its GPUs are returned."""

from __future__ import annotations

from dockyard.background.driver.context import Context
from dockyard.core.states import Status
from dockyard.db.models import Instance
from dockyard.services.held import held
from dockyard.services.lifecycle import transition


def stop(ctx: Context, instance: Instance, status: Status) -> None:
    platform = ctx.platform
    platform.instances(instance.node_name).stop(held(instance))
    transition(platform, instance.id, status, Status.STOPPED, "container stopped; GPUs returned")
