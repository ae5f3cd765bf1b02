"""Every status change of an instance goes through `change` (inside a transaction that
also takes GPUs) or `transition` (in one of its own): conditional, so two actors cannot
both win, checked against core/states.py's table, and freeing GPUs in the same
transaction when it leaves the statuses that hold them."""

from __future__ import annotations

from datetime import datetime
from typing import Callable

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from dockyard.core.states import HOLDS_GPUS, Status, can_transition
from dockyard.db.models import GpuAssignment, Instance, InstanceEvent, utcnow
from dockyard.services.platform import Platform


def change(db: Session, instance_id: str, expected: Status, target: Status, cause: str,
           expected_container: str | None = None, at: datetime | None = None, event_fields: dict | None = None,
           **fields) -> InstanceEvent | None:
    """Move an instance from `expected` to `target` if it is still in `expected` (and,
    when given, still has `expected_container`), inside the caller's transaction: its
    event, or None when it had moved on.

    Conditional, so two actors cannot both win and a decision made on an old look at
    the engine cannot undo a newer one. Leaving the statuses that hold GPUs frees them
    in the same transaction. The caller commits, then calls `announce`: a change that
    takes GPUs commits with their assignment, under the allocation lock. `at`: when it
    happened, if not now (a node last seen earlier). `event_fields`: columns of the event
    row (`fields` are the instance's).
    """
    if not can_transition(expected, target):
        raise ValueError(f"illegal transition {expected} -> {target}")
    conditions = [Instance.id == instance_id, Instance.status == expected]
    now = utcnow()  # the event's time and the status's start are one moment
    if expected_container is not None:
        conditions.append(Instance.container_id == expected_container)
    values = {"status_reason": cause if target == Status.FAILED else None, **fields}
    done = db.execute(update(Instance).where(*conditions).values(status=target, updated_at=now, **values)).rowcount
    if not done:
        return None
    if target not in HOLDS_GPUS:
        db.execute(delete(GpuAssignment).where(GpuAssignment.instance_id == instance_id))
    event = InstanceEvent(instance_id=instance_id, from_status=expected, to_status=target, cause=cause, at=at or now,
                          **(event_fields or {}))
    db.add(event)
    return event


def announce(platform: Platform, expected: Status, target: Status) -> None:
    """After a change commits: waiters for a status see it; GPUs returned or a waiter gone
    wake the queue, whose next one may start now."""
    if (expected in HOLDS_GPUS and target not in HOLDS_GPUS) or expected == Status.QUEUED:
        platform.gpus_freed.set()
    platform.notify_changed()


def transition(
    platform: Platform, instance_id: str, expected: Status, target: Status, cause: str,
    expected_container: str | None = None, also: Callable[[Session], None] | None = None,
    at: datetime | None = None, event_fields: dict | None = None, **fields
) -> bool:
    """`change` in a transaction of its own, announced; `also` adds writes (a
    notification) that commit with the change or not at all."""
    with platform.sessions.begin() as db:
        if change(db, instance_id, expected, target, cause, expected_container, at, event_fields, **fields) is None:
            return False
        if also is not None:
            also(db)
    announce(platform, expected, target)
    return True
