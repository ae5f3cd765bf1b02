"""The start queue (issue 12; rules in core/queue.py, docs/queue.md): an instance whose
node's GPUs are taken waits in status `queued` and starts by itself when they are free.

Dispatch is event-driven: `instances.transition` sets `platform.gpus_freed` whenever an
instance returns GPUs, and the dispatcher wakes at once; it also wakes at the next
queue timeout, and at least every reconcile interval as a backstop (a node that comes
back brings GPUs without any transition). Everything is in the database, so a crash
loses no waiter and the restarted dispatcher serves them in the same order.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Iterable

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dockyard.background.loop import Loop
from dockyard.core import queue as rules
from dockyard.core.errors import Conflict, DockyardError
from dockyard.core.placement import ANY_MODEL, NodeView, SharedGpu, place
from dockyard.core.sharing import MIG
from dockyard.core.states import Status
from dockyard.db.models import Instance, InstanceEvent, User, utcnow
from dockyard.services import notifications
from dockyard.services.platform import Platform

log = logging.getLogger(__name__)


# ---- reading -------------------------------------------------------------------------


def waiters(db: Session, node: str | None = None, model: str | None = None) -> list[rules.Waiter]:
    query = select(Instance.id, Instance.node_name, Instance.gpu_model, Instance.gpu_count, Instance.queue_seq).where(
        Instance.status == Status.QUEUED)
    if node is not None:
        query = query.where(Instance.node_name == node)
    if model is not None:
        query = query.where(Instance.gpu_model == model)
    return [rules.Waiter(*row) for row in db.execute(query.order_by(Instance.queue_seq))]


def position(db: Session, instance: Instance) -> int | None:
    """1 = the next to start among the waiters for its node and GPU model."""
    if instance.status != Status.QUEUED:
        return None
    return rules.positions(waiters(db, instance.node_name, instance.gpu_model))[instance.id]


def hide_reserved(db: Session, views: Iterable[NodeView]) -> None:
    """Take the free GPUs of every node and model that someone waits for out of `views`:
    a later request must not jump the queue (core/queue.py). That holds for shares too:
    a share cut from a split GPU would keep it from the waiters, who rent GPUs whole.
    MIG instances stay free: a GPU in MIG mode is never rented whole."""
    waited = {(w.node, w.model) for w in waiters(db)}
    if waited:
        for view in views:
            view.free = [g for g in view.free if (view.name, g.model) not in waited]
            view.shared = [SharedGpu(s.gpu, s.mode, tuple(replace(slot, free=False) for slot in s.slots))
                           if s.mode != MIG and (view.name, s.gpu.model) in waited else s for s in view.shared]


def refusal(db: Session, settings, node: str, model: str, needed: int, what: str,
            summary: str | None = None) -> rules.GpusTaken:
    """The refusal for a start or create on `node` whose GPUs are taken, with the real
    free count (reserved ones included) and the line ahead."""
    from dockyard.services.instances import _node_views
    views = _node_views(db, settings, only_node=node, include_reserved=True)
    free = sum(1 for g in views[0].free if g.model == model) if views else 0
    return rules.GpusTaken(node, model, needed, free, len(waiters(db, node, model)), what, summary)


# ---- joining and leaving -------------------------------------------------------------


def queue_fields(db: Session, timeout_minutes: int | None, next_status: Status) -> dict:
    """The columns of an instance that joins the queue now. Called under the allocation
    lock, so the arrival number is unique and in order."""
    now = utcnow()
    last = db.scalar(select(func.max(Instance.queue_seq))) or 0
    return {"status": Status.QUEUED, "queue_seq": last + 1, "queued_at": now, "queue_next": next_status.value,
            "queue_deadline": now + timedelta(minutes=timeout_minutes) if timeout_minutes else None}


def choose_node(views: list[NodeView], model: str, count: int, db: Session) -> tuple[str, str]:
    """Where a queued create waits: among the nodes and models that could ever hold it,
    the one with the fewest waiters, then the most free GPUs, then by name."""
    lines: dict[tuple[str, str], int] = {}
    for waiter in waiters(db):
        lines[(waiter.node, waiter.model)] = lines.get((waiter.node, waiter.model), 0) + 1
    options = []
    for view in views:
        for gpu_model, total in view.models.items():
            if model in (ANY_MODEL, gpu_model) and total >= count:
                free = sum(1 for g in view.free if g.model == gpu_model)
                options.append((lines.get((view.name, gpu_model), 0), -free, view.name, gpu_model))
    if not options:
        raise Conflict(f"no online node holds {count} {'GPUs of one model' if model == ANY_MODEL else model + ' GPUs'}")
    _, _, node, gpu_model = min(options)
    return node, gpu_model


def joined_message(db: Session, instance: Instance) -> str:
    limit = f", gives up at {instance.queue_deadline:%Y-%m-%d %H:%M} UTC" if instance.queue_deadline else ""
    return (f"queued for {instance.gpu_count} x {instance.gpu_model} on node {instance.node_name} "
            f"(position {position(db, instance)}{limit})")


def _waited(queued_at: datetime | None) -> str:
    seconds = int((utcnow() - queued_at).total_seconds()) if queued_at else 0
    return f"{seconds // 60} min {seconds % 60} s"


# ---- the dispatcher ------------------------------------------------------------------


def expire(platform: Platform) -> list[str]:
    """Waiters past their queue timeout go back to stopped, and their owners are told."""
    from dockyard.services.instances import transition
    now = utcnow()
    with platform.sessions.begin() as db:  # compared here, not in SQL: SQLite keeps times as text
        overdue = [(i.id, i.name, i.owner_id, i.queued_at) for i in db.scalars(
            select(Instance).where(Instance.status == Status.QUEUED, Instance.queue_deadline.is_not(None)))
            if i.queue_deadline <= now]
    done = []
    for instance_id, name, owner_id, queued_at in overdue:
        cause = f"queue timeout: its GPUs were not free within {_waited(queued_at)}; left the queue, disks kept"
        if transition(platform, instance_id, Status.QUEUED, Status.STOPPED, cause,
                      also=lambda db, o=owner_id, n=name, c=cause: notifications.post(db, o, "instance", f"instance {n}: {c}")):
            done.append(instance_id)
    return done


def dispatch(platform: Platform) -> list[str]:
    """Start every waiter that may start now, in order, in one transaction: each takes
    its GPUs (those it held before first), placed by its node pool's policy as any start
    is, and goes to creating or starting, for the driver. A waiter whose owner can no
    longer pay leaves the queue, told why."""
    from dockyard.services import billing
    from dockyard.services.instances import _assign, _history, _lock_allocation, _node_views
    settings = platform.settings
    started: list[str] = []
    with platform.sessions.begin() as db:
        if not waiters(db):
            return []
        _lock_allocation(db)
        waiting = waiters(db)  # again, under the lock
        # Lines whose head has its GPUs free but not the node's CPUs or memory that go with
        # them: the head stays first and blocks its line, as when it lacks GPUs.
        blocked: set[tuple[str, str]] = set()
        while True:
            # Read again after each start: its slots, CPUs and memory are taken now.
            views = {v.name: v for v in _node_views(db, settings, include_reserved=True)}
            free: dict[tuple[str, str], int] = {}
            for view in views.values():
                for gpu in view.free:
                    if (view.name, gpu.model) not in blocked:
                        free[(view.name, gpu.model)] = free.get((view.name, gpu.model), 0) + 1
            waiter = rules.next_to_start(waiting, free)
            if waiter is None:
                break
            instance = db.get(Instance, waiter.id)
            try:
                billing.check_can_afford(db, settings, db.get(User, instance.owner_id), waiter.model,
                                         instance.gpu_milli, waiter.node)
            except DockyardError as exc:
                waiting.remove(waiter)
                cause = f"left the queue: {exc.message}"
                _leave(db, instance, Status.STOPPED, cause, f"instance {instance.name} did not start: {cause}")
                continue
            try:
                placement = place([views[waiter.node]], waiter.model, waiter.count,
                                  frozenset(instance.container_gpus or []), history=_history(db))
            except Conflict:
                blocked.add((waiter.node, waiter.model))
                continue
            waiting.remove(waiter)
            cause = (f"left the queue after {_waited(instance.queued_at)}: GPUs "
                     f"{', '.join(str(g.index) for g in placement.gpus)} are free")
            if _leave(db, instance, Status(instance.queue_next or Status.STARTING), cause,
                      f"instance {instance.name} is starting: {cause}"):
                _assign(db, instance.id, placement)
                started.append(instance.id)
    return started


def _leave(db: Session, instance: Instance, target: Status, cause: str, notice: str) -> bool:
    """Move a waiter out of the queue; False when it left meanwhile (a stop or `rm` takes
    no allocation lock)."""
    done = db.execute(update(Instance).where(Instance.id == instance.id, Instance.status == Status.QUEUED).values(
        status=target, status_reason=None, updated_at=utcnow())).rowcount
    if not done:
        return False
    db.add(InstanceEvent(instance_id=instance.id, from_status=Status.QUEUED, to_status=target, cause=cause))
    notifications.post(db, instance.owner_id, "instance", notice)
    return True


class Dispatcher(Loop):
    name = "queue"

    def __init__(self, platform: Platform, driver):
        super().__init__()  # its first pass, at once, serves whoever waited through a restart
        self.platform, self.driver = platform, driver

    def run_once(self) -> None:
        changed = expire(self.platform)
        for instance_id in dispatch(self.platform):
            self.driver.kick(instance_id)
            changed.append(instance_id)
        if changed:
            self.platform.notify_changed()

    def wait(self) -> None:
        timeout = self.platform.settings.reconcile_interval_s
        with self.platform.sessions.begin() as db:
            soonest = min(db.scalars(select(Instance.queue_deadline).where(
                Instance.status == Status.QUEUED, Instance.queue_deadline.is_not(None))), default=None)
        if soonest is not None:
            timeout = max(0.0, min(timeout, (soonest - utcnow()).total_seconds()))
        self.platform.gpus_freed.wait(timeout)
        # Cleared before the pass reads the database: a freeing committed after this
        # sets it again, so no wake is lost.
        self.platform.gpus_freed.clear()

    def stop(self) -> None:
        super().stop()
        self.platform.gpus_freed.set()
