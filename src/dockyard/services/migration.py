"""Migrating a stopped instance to another node (docs/migrate.md): its system disk and
every disk it mounts (its data disk, or the volume it has there, and its other volumes)
are copied to the other engine, checked, and it is started there. It keeps its id, name,
Jupyter URL, service ports and share links; its SSH endpoint changes.

Never half: the instance is `migrating` (holding its GPUs on the target) while the
copies are made, on its source node, whose disks are not touched. One transaction then
moves it (node, SSH port, volumes) and makes it `starting` there. Until then any failure,
crash or overrun leaves it `stopped` on its source; `migrate_peer` names the other node,
where the sweep (every reconciler pass) removes what a migration left: the partial copy
of one that failed, or the source's disks once it has run on the target.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import wait
from dataclasses import dataclass

from sqlalchemy import func, select, update

from dockyard.core.errors import Conflict
from dockyard.core.gpus import driver_runs
from dockyard.core.kinds import NoticeKind
from dockyard.core.migration import choose_target
from dockyard.core.states import Status, check_user_action
from dockyard.core.treecheck import differences
from dockyard.db.models import Image, Instance, InstanceEvent, Node, User, Volume
from dockyard.runtimes import transfer
from dockyard.runtimes.base import HELPER_LABEL, Feature, RuntimeError_
from dockyard.runtimes.instances import Held
from dockyard.services import allocation, instances, lifecycle, notifications, volumes
from dockyard.services.held import fields as held_fields, held, system_disk
from dockyard.services.names import container_name, data_volume
from dockyard.services.operations import Operation
from dockyard.services.billing import ledger
from dockyard.services.platform import Platform
from dockyard.services.work import Driving

log = logging.getLogger(__name__)
NOTICE_KIND = NoticeKind.INSTANCE
_ENDED = "the migration was ended meanwhile (a release, or its deadline)"


@dataclass(frozen=True)
class Disk:
    name: str  # on the engine: the same on both nodes
    size_gb: int
    labels: dict[str, str]


def _disks(platform: Platform, db, instance: Instance) -> list[Disk]:
    """Every disk the instance mounts: its own data disk unless a volume is mounted there."""
    mounted = volumes.mounted(db, instance.id)
    found = [Disk(v.engine_name, v.size_gb, volumes.labels(platform, v.id)) for v in mounted]
    if not any(v.mount_path == volumes.DATA_MOUNT for v in mounted):
        found.insert(0, Disk(data_volume(platform, instance.id), instance.data_disk_gb, _labels(platform, instance.id)))
    return found


def _labels(platform: Platform, instance_id: str) -> dict[str, str]:
    return {**platform.labels, "dockyard.instance": instance_id}


def _endpoint(db, node: str, port: int | None) -> str:
    host = db.get(Node, node).public_host or "127.0.0.1"
    return f"{host}:{port}" if port else "none"


# ---- asking ------------------------------------------------------------------------------


def request_migration(platform: Platform, driver: Driving, user: User, key: str,
                      node: str | None) -> tuple[Instance, Operation]:
    """Check, then record the migration of a stopped (or failed) instance: migrating, the
    target's GPUs held; copy in the background. The operation reports how far it got."""
    with platform.sessions.begin() as db:
        found = instances.get_owned(db, user, key)
        instance_id = _check_status(found)  # first: the hold below waits for a start or stop to end
    lock = driver.hold(instance_id)  # nothing drives it while its disks are copied
    try:
        instance, target = allocation.with_retries(
            lambda: _record(platform, user, instance_id, node))
    except BaseException:
        lock.release()
        raise
    op = platform.operations.start("migrate", instance.name, user, phase=f"moving to node {target}",
                                   instance_id=instance.id)
    platform.pools.copies.submit(_run, platform, driver, instance.id, lock, op)  # beside clones' copies
    return instance, op


def _check_status(instance: Instance) -> str:
    """Its id, if its status lets it migrate: stopped or failed."""
    current = Status(instance.status)
    if current in (Status.MIGRATING, Status.LOST):
        check_user_action(current, "start")  # why, in their own words
    if current not in (Status.STOPPED, Status.FAILED):
        raise Conflict(f"instance {instance.name} is {current}; stop it first (a migration copies the disks "
                       "of a stopped instance)")
    return instance.id


def _record(platform: Platform, user: User, instance_id: str, node: str | None) -> tuple[Instance, str]:
    with platform.sessions.begin() as db:
        instance = db.get(Instance, instance_id)
        current = Status(instance.status)
        _check_status(instance)
        source = db.get(Node, instance.node_name)
        if not source.online or source.name not in platform.runtimes:
            raise Conflict(f"node {source.name}, where the instance's disks are, is offline")
        platform.refuse_lacking(source.name, Feature.MIGRATION, f"instance {instance.name} cannot migrate")
        needed = [Feature.MIGRATION, *allocation.needs(bool(instance.gpu_count))]  # what its target must have
        for feature in needed if node else ():
            platform.refuse_lacking(node, feature, "node", field="node")
        if instance.cluster_id:
            raise Conflict(f"instance {instance.name} is a member of a cluster; its members stay on their nodes")
        if instance.gpu_share:
            raise Conflict(f"instance {instance.name} holds a share of a GPU ({instance.gpu_share}); migrations move "
                           "whole GPUs only")
        if not (instance.container_id or system_disk(instance)):
            raise Conflict(f"instance {instance.name} has no system disk yet")
        if instance.migrate_peer and _keeps_backup(db, instance):
            raise Conflict(f"instance {instance.name} has not run on node {instance.node_name} since it moved there; "
                           f"its old disks on node {instance.migrate_peer} are kept until it has (start it, or "
                           "release it)")
        if instance.migrate_peer:
            raise Conflict(f"the last migration of {instance.name} is still being cleaned up on node "
                           f"{instance.migrate_peer}; try again in a moment")
        busy = [v.name for v in volumes.mounted(db, instance.id) if v.status != "ready"]
        if busy:
            raise Conflict(f"volume {busy[0]} is being resized or removed; migrate when it is done")
        allocation.lock_allocation(db)
        known = set(db.scalars(select(Node.name)))
        views = [v for v in allocation.node_views(db, platform.settings)
                 if v.name in platform.runtimes and not any(platform.lacks(v.name, f) for f in needed)]
        count = instance.gpu_count
        placement = choose_target(views, known, instance.node_name, instance.gpu_model, count, node)
        target = db.get(Node, placement.node)
        image = db.get(Image, instance.image_id)
        if count and image.min_driver and not driver_runs(target.driver_version, image.min_driver):
            raise Conflict(f"node: node {target.name} has NVIDIA driver {target.driver_version}; image "
                           f"{image.name} needs {image.min_driver} or newer", field="node")
        ledger.check_can_afford(db, platform.settings, user, instance.gpu_model, instance.gpu_milli, target.name)
        cause = f"migration from node {instance.node_name} to node {target.name} requested by {user.name}"
        if lifecycle.change(db, instance.id, current, Status.MIGRATING, cause, migrate_peer=target.name,
                            no_gpu=False) is None:
            raise Conflict("the instance changed status meanwhile; look again and retry")
        allocation.assign(db, instance.id, placement)
    lifecycle.announce(platform, current, Status.MIGRATING)
    with platform.sessions.begin() as db:
        return db.get(Instance, instance_id), placement.node


# ---- copying -----------------------------------------------------------------------------


class _Progress:
    """Bytes copied so far over the streams of the copy (the system disk, then each disk),
    one after the other, as the operation's percentage within the copy's span."""

    def __init__(self, op: Operation, start: float, end: float, total: int):
        self.op, self.start, self.span, self.total = op, start, end - start, max(total, 1)
        self.sent: dict[str, int] = {}
        self.shown = -1.0

    def stream(self, name: str):
        def on_bytes(sent: int) -> None:
            self.sent[name] = sent
            percent = self.start + self.span * min(sum(self.sent.values()) / self.total, 1.0)
            if percent - self.shown >= 0.5:
                self.shown = percent
                self.op.update(percent=percent)
        return on_bytes


def _run(platform: Platform, driver: Driving, instance_id: str, lock, op: Operation) -> None:
    moved = False
    try:
        with platform.sessions.begin() as db:
            instance = db.get(Instance, instance_id)
            disks = _disks(platform, db, instance)
        source, target = instance.node_name, instance.migrate_peer
        try:
            ref, summary = _copy(platform, instance, disks, op)
            moved = _switch(platform, instance, ref, summary)
            if not moved:
                raise RuntimeError_(_ENDED)
        except Exception as exc:
            _roll_back(platform, instance, str(exc), op)
            return
    finally:
        lock.release()
    op.update(f"starting on node {target}", 97)
    driver.drive(instance_id)
    status, reason = _started(platform, instance_id)
    if status == Status.RUNNING:
        sweep_one(platform, driver, instance_id)  # the source's disks go now
        op.finish()
    elif status == Status.STARTING:
        op.finish()  # the reconciler goes on driving it; its source's disks go once it runs
    else:
        op.finish(error=f"moved to node {target}, but it did not start there ({status}: {reason}); "
                        f"its disks on node {source} are kept until it runs")


def _started(platform: Platform, instance_id: str) -> tuple[str, str | None]:
    """Its status once its first start on the new node ends (the reconciler may be the
    one driving it), or `starting` past the start deadline."""
    def read() -> tuple[str, str | None]:
        with platform.sessions.begin() as db:
            row = db.get(Instance, instance_id)
            return row.status, row.status_reason
    return platform.wait_until(read, lambda seen: seen[0] != Status.STARTING, platform.settings.starting_timeout_s)


def _copy(platform: Platform, instance: Instance, disks: list[Disk], op: Operation) -> tuple[str, str]:
    """Copy and check every disk: the system disk's image, and what was checked in words."""
    settings = platform.settings
    io = settings.migration_io_timeout_s
    deadline = transfer.Deadline(settings.migrating_timeout_s)
    source, target = platform.runtime(instance.node_name), platform.runtime(instance.migrate_peer)
    labels = _labels(platform, instance.id)
    op.update("saving the system disk", 1)
    ref = system_disk(instance)  # with no container, its system disk is this image already
    if instance.container_id:
        repository, tag = f"dy-{platform.deployment}-sysdisk", f"{instance.id}-{int(time.time() * 1000)}"
        ref = platform.instances(instance.node_name).system_disk_image(held(instance), repository, tag, labels)
    info = source.image_info(ref)
    used = {d.name: (source.volume_usage(d.name) or (0, 0))[1] for d in disks}
    for disk in disks:  # made before any stream starts: a target that stops answering fails here
        target.ensure_volume(disk.name, disk.labels, disk.size_gb)
    progress = _Progress(op, 3, 80, (info.size_bytes if info else 0) + sum(used.values()))
    # The system disk first: the target's helpers are made from it.
    op.update("copying the system disk", 3)
    transfer.send_image(source, target, ref, progress.stream(ref), io, deadline)
    checked = []
    for disk in disks:
        with platform.sessions.begin() as db:
            if db.get(Instance, instance.id).status != Status.MIGRATING:
                raise RuntimeError_(_ENDED)
        op.update(f"copying disk {disk.name}")
        # The source is stopped and mounted read-only: it is checked while it is read.
        # Each disk's source check runs beside its copy.
        source_check = platform.pools.transfers.submit(transfer.manifest, source, disk.name, ref, labels, io, deadline)
        try:
            transfer.send_volume(source, target, disk.name, ref, ref, labels, progress.stream(disk.name), io,
                                 deadline)
        except BaseException:
            wait([source_check])  # its helper is gone before a roll-back looks
            raise
        before = source_check.result()
        op.update(f"checking the copy of {disk.name}")
        after = transfer.manifest(target, disk.name, ref, labels, io, deadline)
        wrong = differences(before, after)
        if wrong:
            raise RuntimeError_(f"the copy of disk {disk.name} differs from it: {'; '.join(wrong)}")
        checked.append(f"{before.files} files, {before.bytes} bytes")
    return ref, f"system disk and {len(disks)} disk(s) copied and checked ({'; '.join(checked)})"


def _switch(platform: Platform, instance: Instance, ref: str, summary: str) -> bool:
    """The one moment it moves: node, SSH port, system disk and volumes, and `starting`
    there (its GPUs on the target held all along); its old node becomes the peer."""
    source, target = instance.node_name, instance.migrate_peer

    def attempt() -> bool:
        with platform.sessions.begin() as db:
            allocation.lock_allocation(db)
            row = db.get(Instance, instance.id)
            if row.status != Status.MIGRATING:
                return False
            port = allocation.free_ssh_port(db, platform, target)
            was, now = _endpoint(db, source, row.ssh_port), _endpoint(db, target, port)
            cause = f"migrated from node {source} to node {target}: {summary}; SSH endpoint now {now} (was {was})"
            db.execute(update(Volume).where(Volume.instance_id == instance.id).values(node_name=target))
            if lifecycle.change(db, row.id, Status.MIGRATING, Status.STARTING, cause[:1000], node_name=target,
                                ssh_port=port, migrate_peer=source, **held_fields(Held(system_disk=ref))) is None:
                return False
            notifications.post(db, row.owner_id, NOTICE_KIND, f"instance {row.name} {cause}")
            return True

    moved = allocation.with_retries(attempt)
    lifecycle.announce(platform, Status.MIGRATING, Status.STARTING)
    return moved


def _roll_back(platform: Platform, instance: Instance, why: str, op: Operation) -> None:
    source, target = instance.node_name, instance.migrate_peer
    cause = f"migration to node {target} failed: {why}; it stays on node {source}, stopped, with its disks"
    log.warning("instance %s: %s", instance.id, cause)
    lifecycle.transition(platform, instance.id, Status.MIGRATING, Status.STOPPED, cause[:1000],
                         also=lambda db: notifications.post(db, instance.owner_id, NOTICE_KIND,
                                                            f"instance {instance.name}: {cause}"))
    op.finish(error=cause)
    _clean_peer(platform, instance.id)


# ---- cleaning up -----------------------------------------------------------------------


def peer_disks(platform: Platform, db, node: str) -> set[str]:
    """The disks on `node` that a migration still needs or has yet to remove: the
    reconciler leaves them to the sweep."""
    found = set()
    for row in db.scalars(select(Instance).where(Instance.migrate_peer == node)):
        found |= {d.name for d in _disks(platform, db, row)}
    return found


def sweep(platform: Platform, driver: Driving) -> None:
    """Finish what migrations left (each reconciler pass, and so after a crash)."""
    with platform.sessions.begin() as db:
        pending = list(db.scalars(select(Instance.id).where(Instance.migrate_peer.is_not(None))))
    for instance_id in pending:
        try:
            sweep_one(platform, driver, instance_id)
        except Exception:
            log.exception("cleaning up the migration of %s failed; next pass retries", instance_id)
    _sweep_helpers(platform, driver)


def _sweep_helpers(platform: Platform, driver: Driving) -> None:
    """Helpers no copy uses any more: a removal that timed out on a slow engine leaves
    one behind (the copy itself goes on), on the source or the target."""
    for node, runtime in list(platform.runtimes.items()):
        try:
            helpers = runtime.list({**platform.labels, HELPER_LABEL: "migrate"})
        except Exception:  # the node does not answer: the next pass
            continue
        for helper in helpers:
            instance_id = helper.labels.get("dockyard.instance", "")
            if driver.busy(instance_id):
                continue  # copying now
            try:
                runtime.remove(helper.id, with_volumes=True)
            except Exception:
                log.info("a migration helper on node %s could not be removed yet; next pass", node)


def _keeps_backup(db, row: Instance) -> bool:
    """Whether its peer holds the disks it moved from and it has not run since it moved:
    they are kept (a first start there that fails or overruns leaves them)."""
    if row.status in (Status.MIGRATING, Status.RELEASING, Status.RELEASED):
        return False
    moved = db.scalar(select(func.max(InstanceEvent.id)).where(
        InstanceEvent.instance_id == row.id, InstanceEvent.from_status == Status.MIGRATING,
        InstanceEvent.to_status == Status.STARTING))
    if moved is None:
        return False
    ran = db.scalars(select(InstanceEvent.id).where(InstanceEvent.instance_id == row.id, InstanceEvent.id > moved,
                                                    InstanceEvent.to_status == Status.RUNNING)).first()
    return ran is None


def sweep_one(platform: Platform, driver: Driving, instance_id: str) -> None:
    with platform.sessions.begin() as db:
        row = db.get(Instance, instance_id)
        status, peer = Status(row.status), row.migrate_peer
        backup = _keeps_backup(db, row)
    if peer is None or backup:
        return
    if status == Status.MIGRATING:
        if driver.busy(instance_id):
            return  # being copied now
        # A process that was copying it is gone: it stays where it is.
        cause = f"migration to node {peer} interrupted (the server restarted); it stays on node {row.node_name}"
        source = platform.runtimes.get(row.node_name)
        if source is not None:  # the helpers that were reading its disks there
            for helper in source.list({**_labels(platform, instance_id), HELPER_LABEL: "migrate"}):
                source.remove(helper.id, with_volumes=True)
        lifecycle.transition(platform, instance_id, Status.MIGRATING, Status.STOPPED, cause,
                             also=lambda db: notifications.post(db, row.owner_id, NOTICE_KIND,
                                                                f"instance {row.name}: {cause}"))
    _clean_peer(platform, instance_id)


def _clean_peer(platform: Platform, instance_id: str) -> None:
    """Remove the instance's containers, disks and system disk copies from its peer node
    and forget the peer; left for the next sweep while that node does not answer."""
    with platform.sessions.begin() as db:
        row = db.get(Instance, instance_id)
        peer, disks = row.migrate_peer, _disks(platform, db, row)
        online = peer is not None and bool(db.get(Node, peer) and db.get(Node, peer).online)
    runtime = platform.runtimes.get(peer) if online else None
    if runtime is None:
        return
    try:
        labels = _labels(platform, instance_id)
        for container in runtime.list(labels):  # its old container, or helpers a crash left
            runtime.remove(container.id, with_volumes=HELPER_LABEL in container.labels)
        runtime.remove(container_name(platform, instance_id))
        for disk in disks:
            runtime.remove_volume(disk.name)
        for ref in runtime.list_images(labels):
            runtime.remove_image(ref)
    except Exception as exc:  # an engine that stopped answering: the next pass
        log.info("could not clean node %s of instance %s yet: %s", peer, instance_id, exc)
        return
    with platform.sessions.begin() as db:
        db.execute(update(Instance).where(Instance.id == instance_id, Instance.migrate_peer == peer)
                   .values(migrate_peer=None))
