"""Files the driver writes into a container before it starts: the package mirrors (at
its first start) and, at every start, the owner's SSH keys and dockyard-shutdown."""

from __future__ import annotations

import logging

from dockyard.core import mirrors as core_mirrors
from dockyard.db.models import Instance, InstanceEvent
from dockyard.runtimes.base import RuntimeError_
from dockyard.runtimes.instances import ContainerInstances, Held
from dockyard.services import inside, mirrors
from dockyard.services.keys import authorized_keys
from dockyard.services.platform import Platform

log = logging.getLogger(__name__)


def write_mirrors(platform: Platform, engine: ContainerInstances, now: Held, instance: Instance) -> None:
    """The site's package mirrors and the owner's additions, as files in the new
    container before its first start. Failing to write them is an event, not a failure."""
    with platform.sessions.begin() as db:
        site, user = mirrors.for_owner(db, instance.owner_id)
    if site.is_empty() and user.is_empty():
        return
    try:
        release = engine.read_file(now, "/etc/os-release")
        if release is None:  # usually a link to /usr/lib/os-release
            release = engine.read_file(now, "/usr/lib/os-release")
        os_release = core_mirrors.parse_os_release(release.decode(errors="replace")) if release else None
        # Paths under /, no folder entry: the engine makes a missing folder (0755) and
        # leaves an existing one (/root, /etc) as it is.
        files = core_mirrors.render(site, user, os_release)
        engine.put_files(now, {path.lstrip("/"): (data, 0o644) for path, data in files.items()})
        cause = "package mirror settings written"
    except RuntimeError_ as exc:
        log.warning("instance %s: package mirror settings not written: %s", instance.id, exc)
        cause = f"package mirror settings not written: {exc}"
    with platform.sessions.begin() as db:
        db.add(InstanceEvent(instance_id=instance.id, from_status=instance.status, to_status=instance.status,
                             cause=cause[:500]))


def write_start_files(platform: Platform, engine: ContainerInstances, now: Held, instance: Instance) -> None:
    """Before every start, in one archive upload (nothing of the image runs): the owner's
    current SSH keys (a key removed since the last start stops working now, even in a
    container that is reused) and dockyard-shutdown with this start's token. A failure
    leaves the instance without them, never without its start."""
    with platform.sessions.begin() as db:
        keys = authorized_keys(db, instance.owner_id)
        files, dirs = inside.start_files(platform, db, instance.id)
    files["root/.ssh/authorized_keys"] = (keys.encode(), 0o600)
    try:
        engine.put_files(now, files, dirs={**dirs, "root/.ssh": 0o700})
    except RuntimeError_ as exc:
        log.info("instance %s: could not write the start's files: %s", instance.id, exc)
