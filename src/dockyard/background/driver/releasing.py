"""releasing -> released: the container and system disk go; the data disk is kept as a
volume unless the user chose to delete it."""

from __future__ import annotations

from dockyard.background.driver.context import Context
from dockyard.core.states import Status
from dockyard.db.models import Instance, utcnow
from dockyard.services import volumes
from dockyard.services.held import NOTHING_HELD, held
from dockyard.services.lifecycle import transition
from dockyard.services.names import container_name, data_volume


def release(ctx: Context, instance: Instance, status: Status) -> None:
    """Remove the container and the system disk; the data disk is kept as a volume
    (recorded in the release's own transaction) unless the user chose to delete it.
    A crash anywhere leaves the instance releasing with its data disk, or released
    with the volume: this step runs again until it commits."""
    platform = ctx.platform
    runtime = platform.runtime(instance.node_name)
    platform.instances(instance.node_name).destroy(instance.id, container_name(platform, instance.id), held(instance))
    own_disk = data_volume(platform, instance.id)
    with platform.sessions.begin() as db:
        row = db.get(Instance, instance.id)
        keep, size_gb = row.keep_data_on_release, row.data_disk_gb
        has_own = not volumes.has_data_volume(db, instance.id)
    present = own_disk in runtime.list_volumes({**platform.labels, "dockyard.instance": instance.id})
    kept = keep and has_own and present
    if not kept:
        runtime.remove_volume(own_disk)
    cause = "container and system disk removed; data disk kept as a volume" if kept else "container and disks removed"
    transition(platform, instance.id, status, Status.RELEASED, cause,
               also=lambda db: volumes.on_release(db, db.get(Instance, instance.id), own_disk if kept else None,
                                                  size_gb),
               released_at=utcnow(), **NOTHING_HELD)
