"""An instance's system disk kept as an image: saved when its container must be made
again (Docker fixes devices and published ports at create), older saves dropped."""

from __future__ import annotations

import logging
import time

from dockyard.db.models import Instance
from dockyard.runtimes.base import Runtime, RuntimeError_
from dockyard.services.platform import Platform

log = logging.getLogger(__name__)


def save(platform: Platform, runtime: Runtime, instance: Instance, container_id: str) -> None:
    runtime.stop(container_id, timeout=platform.settings.stop_timeout_s)
    repository = f"dy-{platform.deployment}-sysdisk"
    tag = f"{instance.id}-{int(time.time() * 1000)}"
    saved = runtime.keep_system_disk(container_id, repository, tag, platform.settings.max_sysdisk_layers)
    # Record the saved disk before the container goes: a crash now loses nothing.
    with platform.sessions.begin() as db:
        row = db.get(Instance, instance.id)
        row.sysdisk_image, row.container_id, row.container_gpus = saved, None, []
    runtime.remove(container_id)
    instance.sysdisk_image, instance.container_id = saved, None


def drop_old(platform: Platform, runtime: Runtime, instance_id: str) -> None:
    """Untag saved system disks older than the current one (committed images carry
    the container's labels, so they are found by instance)."""
    with platform.sessions.begin() as db:
        current = db.get(Instance, instance_id).sysdisk_image
    for ref in runtime.list_images({**platform.labels, "dockyard.instance": instance_id}):
        if ref != current:
            try:
                runtime.remove_image(ref)
            except RuntimeError_ as exc:  # only a name; the next start tries again
                log.info("could not untag %s: %s", ref, exc)
