"""Cloning an instance: a new instance of the same owner, the same image, GPU
model and count (or another count, or none), started over copies of its source's disks:
the data disk copied on the engine by a short-lived helper container, the system disk
committed from the source's container as "save image" does.

Both copies need the two disks on one engine, so a clone is placed on its source's node;
when that node lacks the GPUs asked for, the clone is refused (nothing is made) and the
message says so. Not copied: the SSH password (a clone of an instance that has one gets a
new one, shown once), the JupyterLab token, service ports and their share links.
"""

from __future__ import annotations

import secrets
import time
from functools import partial

from dockyard.core.errors import Conflict, NotFound
from dockyard.core.kinds import NoticeKind
from dockyard.core.states import Status
from dockyard.db.models import Image, Instance, User
from dockyard.runtimes.base import Feature
from dockyard.services.held import held, system_disk
from dockyard.services import instances, notifications, volumes
from dockyard.services.names import container_name, data_volume
from dockyard.services.operations import Operation
from dockyard.services.platform import Platform
from dockyard.services.work import Driving


def clone_instance(platform: Platform, driver: Driving, user: User, key: str, name: str,
                   gpu_count: int | None = None) -> tuple[Instance, Operation]:
    """Record the clone (refusing bad input before anything is made), then copy the disks
    and start it in the background; the operation reports how far the copy got."""
    with platform.sessions.begin() as db:
        source = instances.get_owned(db, user, key)
        if source.owner_id != user.id:  # an admin clones only their own: a clone is the caller's
            raise NotFound(f"instance {key!r} not found")
        image = db.get(Image, source.image_id)
        # The data disk to copy: the source's own, or the volume it mounts there.
        data = next((v for v in volumes.mounted(db, source.id) if v.mount_path == volumes.DATA_MOUNT), None)
    source_disk = data.engine_name if data else data_volume(platform, source.id)
    disk_gb = data.size_gb if data else source.data_disk_gb
    if source.status in (Status.RELEASING, Status.RELEASED) or not source.container_id:
        raise Conflict(f"instance {source.name} is {source.status}; it has no system disk to copy")
    platform.refuse_lacking(source.node_name, Feature.DISK_CLONES, f"instance {source.name} cannot be cloned")
    clone_id = secrets.token_hex(6)
    request = instances.CreateRequest(
        image=image.name, name=name, gpu_model=source.gpu_model,
        gpu_count=source.gpu_count if gpu_count is None else gpu_count,
        gpu_share=source.gpu_share if gpu_count is None else None,  # a share clones as the same share
        env=dict(source.env or {}), secret_env=platform.secret_box.open(source.secret_env),
        command=source.command, data_disk_gb=disk_gb,
        ssh_password=bool(source.ssh_password), auto_stop_idle_minutes=source.auto_stop_idle_minutes,
        auto_stop_max_minutes=source.auto_stop_max_minutes,
        auto_stop_gpu_idle_minutes=source.auto_stop_gpu_idle_minutes,
        auto_stop_gpu_idle_percent=source.auto_stop_gpu_idle_percent, auto_stop_on_exit=source.auto_stop_on_exit,
        instance_id=clone_id, node=source.node_name,
        keep_data_on_release=source.keep_data_on_release, auto_release_days=source.auto_release_days,
        sysdisk_image=f"dy-{platform.deployment}-sysdisk:{clone_id}-{int(time.time() * 1000)}",
        cause=f"cloned by {user.name} from instance {source.name}")
    lock = driver.hold(clone_id)  # before the row exists: nothing drives it until its disks are there
    try:
        clone = instances.create_instance(platform, user, request)
    except BaseException:
        lock.release()
        raise
    op = platform.operations.start("clone", clone.name, user, phase="copying the data disk", instance_id=clone.id)
    # Disk copies can take long: on a pool of their own, not the driver's, so that starts,
    # stops and releases never wait behind them.
    platform.pools.copies.submit(driver.drive_prepared, clone.id, lock,
                                 partial(_copy_disks, platform, source, source_disk, clone, image.ref, op))
    return clone, op


def _copy_disks(platform: Platform, source: Instance, source_disk: str, clone: Instance, helper_image: str,
                op: Operation) -> None:
    """The data disk first, the system disk last: the clone's system disk image appears
    only once both are complete, so a clone driven after a crash in between fails (its
    image is missing) rather than starting over half a data disk."""
    runtime = platform.runtime(source.node_name)
    labels = {**platform.labels, "dockyard.instance": clone.id}  # its release removes them
    try:
        op.update(percent=5)
        runtime.ensure_volume(data_volume(platform, clone.id), labels, clone.data_disk_gb)
        runtime.copy_volume(source_disk, data_volume(platform, clone.id), helper_image,
                            f"{container_name(platform, clone.id)}-copy", labels)
        op.update("committing the system disk", 60)
        repository, tag = system_disk(clone).rsplit(":", 1)
        platform.instances(source.node_name).copy_system_disk(held(source), repository, tag, labels)
    except Exception as exc:
        op.finish(error=f"copying the disks of {source.name} failed: {exc}")
        with platform.sessions.begin() as db:
            notifications.post(db, clone.owner_id, NoticeKind.CLONE, f"cloning {source.name} into {clone.name} failed: {exc}")
        raise
    op.finish()
