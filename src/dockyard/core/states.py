"""The instance state machine: which status may follow which."""

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
    FAILED = "failed"
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
