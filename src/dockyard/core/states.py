"""The state machines of instances, images, clusters and volumes: which status may follow which."""

from __future__ import annotations

from enum import StrEnum

from dockyard.core.errors import Conflict


class Status(StrEnum):
    CREATING = "creating"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    RELEASING = "releasing"
    RELEASED = "released"
    FAILED = "failed"
    # Waiting for its node's GPUs (core/queue.py): holds none, owes the engines nothing.
    QUEUED = "queued"
    LOST = "lost"  # its node stopped answering; comes back stopped when the node returns
    # Its disks are being copied to another node (services/migration.py); it holds the
    # GPUs it will start with there.
    MIGRATING = "migrating"


class ImageStatus(StrEnum):
    READY = "ready"
    ABSENT = "absent"  # a catalog entry not built on any node yet
    BUILDING = "building"
    SAVING = "saving"  # a user's system disk being committed
    DELETED = "deleted"  # kept for the instances made from it


class ClusterStatus(StrEnum):
    LIVE = "live"
    RELEASING = "releasing"  # its members are going; the network goes after them
    RELEASED = "released"


class VolumeStatus(StrEnum):
    READY = "ready"
    RESIZING = "resizing"
    DELETING = "deleting"
    DELETED = "deleted"


# The tables of images, clusters and volumes: from-status -> the statuses it may move to;
# None stands for a row not yet written (its first status). Only services/statuses.py
# changes these statuses, through `check_transition`. Writing the status a row already
# has changes nothing and is always allowed (a removal finished twice, a second node
# that finds an image ready).

IMAGE_TRANSITIONS: dict[ImageStatus | None, frozenset[ImageStatus]] = {
    # Catalog entries start absent, registered images ready (every node checked first),
    # saved ones saving (the commit runs after the row).
    None: frozenset({ImageStatus.ABSENT, ImageStatus.READY, ImageStatus.SAVING}),
    # A build starts; or a node is found holding it (the cache refresh, a pull).
    ImageStatus.ABSENT: frozenset({ImageStatus.BUILDING, ImageStatus.READY}),
    # Built; or the build failed, or a crash interrupted it (heal_interrupted), and the
    # entry is absent again. Ready also when a build on another node finished first.
    ImageStatus.BUILDING: frozenset({ImageStatus.ABSENT, ImageStatus.READY}),
    # The commit is on the node (or found there after a crash). A failed save removes
    # the row instead. Deleted: a delete while saving (unreachable today: no instance is
    # made from a saving image, so its row is removed), allowed as harmless.
    ImageStatus.SAVING: frozenset({ImageStatus.READY, ImageStatus.DELETED}),
    # Deleted but kept for the released instances made from it (else the row goes).
    ImageStatus.READY: frozenset({ImageStatus.DELETED}),
    ImageStatus.DELETED: frozenset(),  # renamed and hidden: nothing finds it again
}

CLUSTER_TRANSITIONS: dict[ClusterStatus | None, frozenset[ClusterStatus]] = {
    None: frozenset({ClusterStatus.LIVE}),
    ClusterStatus.LIVE: frozenset({ClusterStatus.RELEASING}),  # `release` of the cluster
    # The reconciler's reap, once every member is released and the network is gone.
    ClusterStatus.RELEASING: frozenset({ClusterStatus.RELEASED}),
    ClusterStatus.RELEASED: frozenset(),
}

VOLUME_TRANSITIONS: dict[VolumeStatus | None, frozenset[VolumeStatus]] = {
    # Made by hand, or kept from a released instance's data disk.
    None: frozenset({VolumeStatus.READY}),
    # Claimed for a resize or a removal; deleted at once when the engine could not make
    # it (the row was written first).
    VolumeStatus.READY: frozenset({VolumeStatus.RESIZING, VolumeStatus.DELETING, VolumeStatus.DELETED}),
    VolumeStatus.RESIZING: frozenset({VolumeStatus.READY}),  # resized, or refused: ready either way
    # The engine removed it (by the removal, or by the reconciler after a crash).
    VolumeStatus.DELETING: frozenset({VolumeStatus.DELETED}),
    VolumeStatus.DELETED: frozenset(),
}


class IllegalTransition(ValueError):
    """A status change its table does not allow: a bug in the code that asked for it."""


def check_transition(table: dict, entity: str, old, new) -> None:
    """Refuse a change of `entity`'s status from `old` (None: a new row) to `new` that
    `table` does not allow."""
    if old is not None and old == new:
        return
    if new not in table.get(old, frozenset()):
        raise IllegalTransition(f"{entity}: illegal status change {'(new)' if old is None else old} -> {new}")


# Statuses in which the platform owes the engines some work.
TRANSITIONAL = frozenset({Status.CREATING, Status.STARTING, Status.STOPPING, Status.RELEASING})
# Statuses in which an instance holds GPUs: until its container is really gone or
# stopped, so no other container can get them meanwhile.
HOLDS_GPUS = frozenset({Status.CREATING, Status.STARTING, Status.RUNNING, Status.STOPPING, Status.RELEASING,
                        Status.MIGRATING})

ALLOWED: dict[Status, frozenset[Status]] = {
    Status.CREATING: frozenset({Status.RUNNING, Status.FAILED, Status.RELEASING, Status.LOST}),
    Status.STARTING: frozenset({Status.RUNNING, Status.FAILED, Status.RELEASING, Status.STOPPED, Status.LOST}),
    Status.RUNNING: frozenset({Status.STOPPING, Status.STOPPED, Status.RELEASING, Status.FAILED, Status.LOST}),
    Status.STOPPING: frozenset({Status.STOPPED, Status.FAILED, Status.RELEASING, Status.LOST}),
    Status.STOPPED: frozenset({Status.STARTING, Status.QUEUED, Status.RELEASING, Status.FAILED, Status.MIGRATING}),
    Status.FAILED: frozenset({Status.STARTING, Status.QUEUED, Status.RELEASING, Status.MIGRATING}),
    # Dequeued into creating (a queued create) or starting; cancelled by a stop or its
    # timeout back to stopped (its disks, if any, kept); released at once by `rm`. It
    # holds nothing on its node, so it is never lost: it waits while the node is away.
    Status.QUEUED: frozenset({Status.CREATING, Status.STARTING, Status.STOPPED, Status.RELEASING}),
    # A release that overran its deadline fails with its data kept, to be asked again.
    Status.RELEASING: frozenset({Status.RELEASED, Status.FAILED}),
    Status.RELEASED: frozenset(),
    # Its release is accepted at once and finished on the node when it answers again.
    Status.LOST: frozenset({Status.STOPPED, Status.RELEASING}),
    # Starting on its new node once the copies are checked; else stopped where it was. A
    # release ends the copy (services/migration.py) and releases it where it was.
    Status.MIGRATING: frozenset({Status.STARTING, Status.STOPPED, Status.RELEASING}),
}

# What a user asks for, and the status it leads to.
# A start whose GPUs are taken may go to queued instead (services/instances.request_start).
_USER_ACTIONS = {"stop": Status.STOPPING, "start": Status.STARTING, "release": Status.RELEASING}


def can_transition(current: Status, target: Status) -> bool:
    return target in ALLOWED[current]


def check_user_action(current: Status, action: str) -> Status:
    """The status a user action moves to, or a Conflict that says why it cannot."""
    target = _USER_ACTIONS[action]
    if current == Status.RELEASING and action == "release":
        return target  # asking twice is harmless
    if current == Status.QUEUED and action == "stop":
        return Status.STOPPED  # nothing runs yet: a stop leaves the queue at once
    if current == Status.QUEUED and action == "start":
        raise Conflict("the instance is already queued for its GPUs; `dockyard stop` leaves the queue")
    if current == Status.LOST and action != "release":
        raise Conflict(f"cannot {action} an instance that is lost: its node does not answer; it comes back "
                       "stopped, with its disks, when the node returns (a release is accepted now)")
    if current == Status.MIGRATING and action != "release":  # its moves are the migration's own
        raise Conflict(f"cannot {action} an instance that is migrating: its disks are being copied to another "
                       "node, where it starts when they are checked (a release ends the copy)")
    if not can_transition(current, target):
        raise Conflict(f"cannot {action} an instance that is {current.value}")
    return target
