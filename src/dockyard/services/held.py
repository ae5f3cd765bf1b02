"""What a node's engine holds of an instance (runtimes/instances.Held), as the instance's
row records it: read and written here only."""

from __future__ import annotations

from dockyard.db.models import Instance
from dockyard.runtimes.instances import Held, Record
from dockyard.services.platform import Platform

# The row's fields when the engine holds nothing of it (released, or made again elsewhere).
NOTHING_HELD = {"container_id": None, "container_gpus": [], "sysdisk_image": None}


def held(instance: Instance) -> Held:
    return Held(instance.container_id, tuple(instance.container_gpus or ()), instance.sysdisk_image)


def recorder(platform: Platform, instance: Instance) -> Record:
    """Writes what is held to the row, at once and in a transaction of its own, and keeps
    the caller's copy of the row in step."""
    def record(now: Held) -> None:
        with platform.sessions.begin() as db:
            row = db.get(Instance, instance.id)
            row.container_id, row.container_gpus, row.sysdisk_image = now.container_id, list(now.gpus), now.system_disk
        instance.container_id, instance.container_gpus, instance.sysdisk_image = (
            now.container_id, list(now.gpus), now.system_disk)
    return record
