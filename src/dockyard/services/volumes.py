"""Volumes (docs/volumes.md): a user's disks of their own. Made by hand, or kept from a
released instance's data disk (in the release's own transaction: the instance is released
and the volume exists, or neither changed). A volume lives on one node, is mounted
read-write by at most one live instance (`Volume.instance_id`, taken by a conditional
update) and cannot be removed or resized while an instance would write to it.

Engine work is never done inside a transaction: a row moves to a transitional status
(resizing, deleting) first, and the reconciler finishes a deletion a crash interrupted.
"""

from __future__ import annotations

import logging
import posixpath
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dockyard.core.errors import Conflict, InvalidInput, NotFound
from dockyard.core.kinds import NoticeKind
from dockyard.core.states import Status, VolumeStatus
from dockyard.db.models import Instance, Node, User, Volume, utcnow
from dockyard.runtimes.base import Feature, RuntimeError_
from dockyard.runtimes.disks import DiskTooSmall
from dockyard.services import notifications, ownership, statuses
from dockyard.services.platform import Platform

log = logging.getLogger(__name__)

GIB = 1024**3
RESIZE = "resize"  # the operation's kind; its target is the volume's name
DATA_MOUNT = "/root/data"
# Where another volume may not be mounted: the system's own directories (and below them).
SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/sbin", "/sys", "/usr")
SYSTEM_ROOTS = ("/", "/root", "/run", "/tmp", "/var", "/home")
NOTICE_KIND = NoticeKind.VOLUME
# Statuses in which an instance's container may have the volume mounted (or soon will).
WRITING = (Status.CREATING, Status.STARTING, Status.RUNNING, Status.STOPPING, Status.RELEASING)


@dataclass(frozen=True)
class Mount:
    """A volume asked for at create: `path` None is the data disk (/root/data)."""

    volume: str
    path: str | None = None


def engine_name(platform: Platform, volume_id: str) -> str:
    return f"dy-{platform.deployment}-vol-{volume_id}"


def labels(platform: Platform, volume_id: str) -> dict[str, str]:
    return {**platform.labels, "dockyard.volume": volume_id}


# ---- reading -------------------------------------------------------------------------


def get_owned(db: Session, user: User, key: str) -> Volume:
    """A volume by id, or by name among the caller's live ones; others' answer 404."""
    return ownership.get_owned(db, Volume, user, key, "volume", gone="deleted")


def list_volumes(db: Session, user: User, include_deleted: bool = False) -> list[Volume]:
    query = select(Volume).order_by(Volume.created_at)
    if not user.is_admin:
        query = query.where(Volume.owner_id == user.id)
    if not include_deleted:
        query = query.where(Volume.status != "deleted")
    return list(db.scalars(query))


def volume_view(db: Session, volume: Volume, used_bytes: int | None = None) -> dict:
    """A volume as the API (VolumeOut) and the console show it: names, not ids."""
    holder = db.get(Instance, volume.instance_id) if volume.instance_id else None
    source = db.get(Instance, volume.source_instance_id) if volume.source_instance_id else None
    return {"id": volume.id, "name": volume.name, "owner": db.get(User, volume.owner_id).name,
            "node": volume.node_name, "size_gb": volume.size_gb, "used_bytes": used_bytes, "status": volume.status,
            "status_reason": volume.status_reason, "instance": holder.name if holder else None,
            "mount_path": volume.mount_path, "source_instance": source.name if source else None,
            "created_at": volume.created_at, "deleted_at": volume.deleted_at}


def owned_view(platform: Platform, user: User, key: str) -> dict:
    """`user`'s volume `key` with the bytes its files take, measured on its disk (left out
    when its node does not answer)."""
    with platform.reads.begin() as db:
        volume = get_owned(db, user, key)
    used = None
    if volume.status == VolumeStatus.READY:
        try:
            usage = platform.runtime(volume.node_name).volume_usage(volume.engine_name)
            used = usage[1] if usage else None
        except (RuntimeError_, NotFound):
            pass
    with platform.reads.begin() as db:
        return volume_view(db, db.get(Volume, volume.id), used)


def mounted(db: Session, instance_id: str) -> list[Volume]:
    """The volumes an instance mounts, the data disk (if a volume) first."""
    found = db.scalars(select(Volume).where(Volume.instance_id == instance_id).order_by(Volume.mount_path)).all()
    return sorted(found, key=lambda v: v.mount_path != DATA_MOUNT)


def has_data_volume(db: Session, instance_id: str) -> bool:
    return any(v.mount_path == DATA_MOUNT for v in mounted(db, instance_id))


def _check_name_free(db: Session, owner_id: int, name: str) -> None:
    taken = db.scalars(select(Volume.id).where(Volume.owner_id == owner_id, Volume.name == name,
                                               Volume.status != "deleted")).first()
    if taken:
        raise Conflict(f"name: you already have a volume named {name!r}", field="name")


def check_size(platform: Platform, size_gb: int) -> None:
    limit = platform.settings.max_volume_gb
    if not 1 <= size_gb <= limit:
        raise InvalidInput(f"size_gb: a volume holds 1 to {limit} GB, not {size_gb}", field="size_gb")


# ---- changes ---------------------------------------------------------------------------


def create_volume(platform: Platform, user: User, name: str, size_gb: int, node: str | None = None) -> Volume:
    check_size(platform, size_gb)
    with platform.sessions.begin() as db:
        if node is None:
            node = db.scalars(select(Node.name).where(Node.online.is_(True)).order_by(Node.name != "local",
                                                                                       Node.name)).first()
            if node is None:
                raise Conflict("no node is online to hold the volume")
        else:
            row = db.get(Node, node)
            if row is None:
                raise NotFound(f"node: node {node!r} not found", field="node")
            if not row.online:
                raise Conflict(f"node: node {node} is offline", field="node")
        _check_name_free(db, user.id, name)
        volume_id = secrets.token_hex(6)
        volume = Volume(id=volume_id, owner_id=user.id, name=name, node_name=node, size_gb=size_gb,
                        engine_name=engine_name(platform, volume_id))
        statuses.set_status(volume, VolumeStatus.READY)
        db.add(volume)
    try:
        platform.runtime(node).ensure_volume(volume.engine_name, labels(platform, volume.id), size_gb)
    except RuntimeError_ as exc:
        with platform.sessions.begin() as db:
            row = db.get(Volume, volume.id)
            statuses.set_status(row, VolumeStatus.DELETED)
            row.status_reason, row.deleted_at = str(exc), utcnow()
        raise Conflict(f"volume {name} could not be made on node {node}: {exc}") from None
    with platform.sessions.begin() as db:
        return db.get(Volume, volume.id)


def _claim(platform: Platform, user: User, key: str, to_status: VolumeStatus, verb: str) -> Volume:
    """Move a ready volume to `to_status` unless an instance would write to it meanwhile."""
    with platform.sessions.begin() as db:
        volume = get_owned(db, user, key)
        if volume.status != "ready":
            raise Conflict(f"volume {volume.name} is {volume.status}")
        instance = db.get(Instance, volume.instance_id) if volume.instance_id else None
        if instance is not None and (verb == "remove" or instance.status in WRITING):
            why = "release it first" if verb == "remove" else "stop it first"
            raise Conflict(f"volume {volume.name} is in use by instance {instance.name} ({instance.status}); {why}")
        done = statuses.change(db, Volume, VolumeStatus.READY, to_status, Volume.id == volume.id,
                               Volume.instance_id == volume.instance_id, status_reason=None)
        if not done:
            raise Conflict(f"volume {volume.name} changed meanwhile; look again and retry")
        return volume


def resize_volume(platform: Platform, user: User, key: str, size_gb: int) -> Volume:
    """Grow or shrink a volume no running instance holds; a shrink below its data: 409."""
    check_size(platform, size_gb)
    with platform.sessions.begin() as db:
        current = get_owned(db, user, key)
        if current.size_gb == size_gb:
            return current
    platform.runtime(current.node_name)  # a node not connected: refused before the claim
    platform.refuse_lacking(current.node_name, Feature.SIZED_DISKS, f"volume {current.name} cannot be resized",
                            field="size_gb")
    # Registered before the claim: a volume resizing with no resize in progress here was
    # left so by a stopped server, and the reconciler finishes it (finish_interrupted_resize).
    op = platform.operations.start(RESIZE, current.name, user, phase="resizing")
    error = None
    try:
        volume = _claim(platform, user, key, VolumeStatus.RESIZING, "resize")
        try:
            platform.runtime(volume.node_name).resize_volume(volume.engine_name, size_gb)
        except DiskTooSmall as exc:
            error = f"volume {volume.name} cannot shrink to {size_gb} GB: {exc}"
        except RuntimeError_ as exc:
            error = f"volume {volume.name} could not be resized: {exc}"
        with platform.sessions.begin() as db:
            row = db.get(Volume, volume.id)
            statuses.set_status(row, VolumeStatus.READY)
            if error is None:
                row.size_gb = size_gb
    except Conflict as exc:
        error = exc.message
        raise
    finally:
        op.finish(error)
    if error:
        raise Conflict(error, field="size_gb")
    with platform.sessions.begin() as db:
        return db.get(Volume, volume.id)


def finish_interrupted_resize(platform: Platform, volume_id: str) -> bool:
    """A volume left resizing by a server stopped in the middle (no resize of it is in
    progress here): ready again, at the size its disk has. Whether it moved."""
    with platform.sessions.begin() as db:
        volume = db.get(Volume, volume_id)
    if platform.operations.in_progress(RESIZE, volume.name, volume.owner_id):
        return False
    usage = platform.runtime(volume.node_name).volume_usage(volume.engine_name)
    size_gb = max(1, round(usage[0] / GIB)) if usage else volume.size_gb
    reason = f"a resize was interrupted by a restart; the volume is {size_gb} GB"
    with platform.sessions.begin() as db:
        done = statuses.change(db, Volume, VolumeStatus.RESIZING, VolumeStatus.READY, Volume.id == volume_id,
                               size_gb=size_gb, status_reason=reason)
    if done:
        log.warning("volume %s: %s", volume.name, reason)
    return bool(done)


def remove_volume(platform: Platform, user: User, key: str) -> Volume:
    volume = _claim(platform, user, key, VolumeStatus.DELETING, "remove")
    finish_removal(platform, volume.id)
    with platform.sessions.begin() as db:
        return db.get(Volume, volume.id)


def finish_removal(platform: Platform, volume_id: str) -> None:
    """The engine step of a removal (idempotent; the reconciler repeats it after a crash)."""
    with platform.sessions.begin() as db:
        volume = db.get(Volume, volume_id)
    try:
        platform.runtime(volume.node_name).remove_volume(volume.engine_name)
    except (RuntimeError_, NotFound) as exc:
        with platform.sessions.begin() as db:
            db.get(Volume, volume_id).status_reason = f"retrying: {exc}"
        raise Conflict(f"volume {volume.name} could not be removed yet ({exc}); it will be retried") from None
    with platform.sessions.begin() as db:
        row = db.get(Volume, volume_id)
        statuses.set_status(row, VolumeStatus.DELETED)
        row.status_reason, row.deleted_at = None, utcnow()


# ---- with instances ------------------------------------------------------------------


def parse_mount(text: str) -> Mount:
    """NAME (the data disk) or NAME:/path (another mount point)."""
    name, sep, path = text.partition(":")
    if not name:
        raise InvalidInput(f"volumes: {text!r} names no volume (NAME or NAME:/path)", field="volumes")
    return Mount(name, check_path(path) if sep else None)


def check_path(path: str) -> str:
    clean = posixpath.normpath(path) if path else ""
    if not path.startswith("/") or clean != path.rstrip("/") or ".." in path.split("/"):
        raise InvalidInput(f"volumes: mount path {path!r} must be an absolute, plain path", field="volumes")
    if clean == DATA_MOUNT:
        return DATA_MOUNT
    if clean in SYSTEM_ROOTS or any(clean == d or clean.startswith(d + "/") for d in SYSTEM_DIRS):
        raise InvalidInput(f"volumes: {clean} is a system directory; mount the volume elsewhere (e.g. /mnt/...)",
                           field="volumes")
    return clean


def resolve_mounts(db: Session, user: User, mounts: list[Mount]) -> tuple[str | None, list[tuple[Volume, str]]]:
    """The user's volumes for a create, checked: (the node they are all on, [(volume, path)])."""
    found: list[tuple[Volume, str]] = []
    paths: set[str] = set()
    for mount in mounts:
        volume = db.scalars(select(Volume).where(Volume.owner_id == user.id, Volume.name == mount.volume,
                                                 Volume.status != "deleted")).first()
        if volume is None:
            raise NotFound(f"volumes: volume {mount.volume!r} not found", field="volumes")
        path = mount.path or DATA_MOUNT
        if path in paths or any(v.id == volume.id for v, _ in found):
            raise InvalidInput(f"volumes: {mount.volume} or {path} is given twice", field="volumes")
        paths.add(path)
        if volume.status != "ready":
            raise Conflict(f"volumes: volume {volume.name} is {volume.status}", field="volumes")
        if volume.instance_id:
            holder = db.get(Instance, volume.instance_id)
            raise Conflict(f"volumes: volume {volume.name} is in use by instance {holder.name}", field="volumes")
        found.append((volume, path))
    nodes = {v.node_name for v, _ in found}
    if len(nodes) > 1:
        raise Conflict(f"volumes: the volumes are on different nodes ({', '.join(sorted(nodes))}); "
                       "an instance runs on one", field="volumes")
    return (nodes.pop() if nodes else None), found


def attach(db: Session, instance_id: str, found: list[tuple[Volume, str]]) -> None:
    """Give the volumes to a new instance, in its create's transaction; a volume another
    create took meanwhile refuses the whole create."""
    for volume, path in found:
        done = db.execute(update(Volume).where(Volume.id == volume.id, Volume.instance_id.is_(None),
                                               Volume.status == "ready")
                          .values(instance_id=instance_id, mount_path=path)).rowcount
        if not done:
            raise Conflict(f"volumes: volume {volume.name} was taken by another instance just now", field="volumes")


def _free_name(db: Session, owner_id: int, wanted: str) -> str:
    taken = set(db.scalars(select(Volume.name).where(Volume.owner_id == owner_id, Volume.status != "deleted",
                                                     Volume.name.like(f"{wanted[:56]}%"))))
    if wanted not in taken:
        return wanted
    for n in range(2, 10_000):
        name = f"{wanted[:56]}-{n}"
        if name not in taken:
            return name
    return f"{wanted[:48]}-{secrets.token_hex(4)}"


def on_release(db: Session, instance: Instance, data_disk: str | None, size_gb: int) -> Volume | None:
    """In the release's transaction: detach the instance's volumes and, when `data_disk`
    (its own data disk's engine name) is given, record that disk as a volume."""
    db.execute(update(Volume).where(Volume.instance_id == instance.id).values(instance_id=None, mount_path=None))
    if data_disk is None or db.scalars(select(Volume.id).where(Volume.engine_name == data_disk)).first():
        return None
    name = _free_name(db, instance.owner_id, instance.keep_data_as or instance.name)
    volume = Volume(id=secrets.token_hex(6), owner_id=instance.owner_id, name=name, node_name=instance.node_name,
                    size_gb=size_gb, engine_name=data_disk, source_instance_id=instance.id)
    statuses.set_status(volume, VolumeStatus.READY)
    db.add(volume)
    notifications.post(db, instance.owner_id, NOTICE_KIND,
                       f"instance {instance.name} was released; its data disk is kept as volume {name} "
                       f"({size_gb} GB, charged per GB per day until you remove it)")
    return volume


def check_keep_name(db: Session, user: User, name: str) -> None:
    _check_name_free(db, user.id, name)
