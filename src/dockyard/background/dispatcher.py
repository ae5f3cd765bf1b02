"""The start queue's dispatcher (rules in core/queue.py, docs/queue.md): an instance whose
node's GPUs are taken waits in status `queued` and starts by itself when they are free.

Dispatch is event-driven: `lifecycle.transition` sets `platform.gpus_freed` whenever an
instance returns GPUs, and the dispatcher wakes at once; it also wakes at the next
queue timeout, and at least every reconcile interval as a backstop (a node that comes
back brings GPUs without any transition). Everything is in the database, so a crash
loses no waiter and the restarted dispatcher serves them in the same order.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.background.loop import Loop
from dockyard.core import queue as rules
from dockyard.core.errors import Conflict, DockyardError
from dockyard.core.kinds import NoticeKind
from dockyard.core.placement import place
from dockyard.core.states import Status
from dockyard.db.models import Instance, User, utcnow
from dockyard.services import allocation, lifecycle, notifications, queue
from dockyard.services.billing import ledger
from dockyard.services.held import container_gpus
from dockyard.services.platform import Platform


def expire(platform: Platform) -> list[str]:
    """Waiters past their queue timeout go back to stopped, and their owners are told."""
    now = utcnow()
    with platform.sessions.begin() as db:  # compared here, not in SQL: SQLite keeps times as text
        overdue = [(i.id, i.name, i.owner_id, i.queued_at) for i in db.scalars(
            select(Instance).where(Instance.status == Status.QUEUED, Instance.queue_deadline.is_not(None)))
            if i.queue_deadline <= now]
    done = []
    for instance_id, name, owner_id, queued_at in overdue:
        cause = f"queue timeout: its GPUs were not free within {queue.waited(queued_at)}; left the queue, disks kept"
        if lifecycle.transition(platform, instance_id, Status.QUEUED, Status.STOPPED, cause,
                      also=lambda db, o=owner_id, n=name, c=cause: notifications.post(db, o, NoticeKind.INSTANCE, f"instance {n}: {c}")):
            done.append(instance_id)
    return done


def dispatch(platform: Platform) -> list[str]:
    """Start every waiter that may start now, in order, in one transaction: each takes
    its GPUs (those it held before first), placed by its node pool's policy as any start
    is, and goes to creating or starting, for the driver. A waiter whose owner can no
    longer pay leaves the queue, told why."""
    settings = platform.settings
    started: list[str] = []
    with platform.sessions.begin() as db:
        if not queue.waiters(db):
            return []
        allocation.lock_allocation(db)
        waiting = queue.waiters(db)  # again, under the lock
        # Lines whose head has its GPUs free but not the node's CPUs or memory that go with
        # them: the head stays first and blocks its line, as when it lacks GPUs.
        blocked: set[tuple[str, str]] = set()
        while True:
            # Read again after each start: its slots, CPUs and memory are taken now.
            views = {v.name: v for v in allocation.node_views(db, settings, include_reserved=True)}
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
                ledger.check_can_afford(db, settings, db.get(User, instance.owner_id), waiter.model,
                                         instance.gpu_milli, waiter.node)
            except DockyardError as exc:
                waiting.remove(waiter)
                cause = f"left the queue: {exc.message}"
                _leave(db, instance, Status.STOPPED, cause, f"instance {instance.name} did not start: {cause}")
                continue
            try:
                placement = place([views[waiter.node]], waiter.model, waiter.count,
                                  container_gpus(instance), history=allocation.request_history(db))
            except Conflict:
                blocked.add((waiter.node, waiter.model))
                continue
            waiting.remove(waiter)
            cause = (f"left the queue after {queue.waited(instance.queued_at)}: GPUs "
                     f"{', '.join(str(g.index) for g in placement.gpus)} are free")
            if _leave(db, instance, Status(instance.queue_next or Status.STARTING), cause,
                      f"instance {instance.name} is starting: {cause}"):
                allocation.assign(db, instance.id, placement)
                started.append(instance.id)
    return started


def _leave(db: Session, instance: Instance, target: Status, cause: str, notice: str) -> bool:
    """Move a waiter out of the queue; False when it left meanwhile (a stop or `rm` takes
    no allocation lock)."""
    if lifecycle.change(db, instance.id, Status.QUEUED, target, cause) is None:
        return False
    notifications.post(db, instance.owner_id, NoticeKind.INSTANCE, notice)
    return True


class Dispatcher(Loop):
    name = "queue"

    def __init__(self, platform: Platform, driver):
        # Its first pass, at once, serves whoever waited through a restart.
        super().__init__(platform.settings.reconcile_interval_s)
        self.platform, self.driver = platform, driver

    def run_once(self) -> None:
        changed = expire(self.platform)
        for instance_id in dispatch(self.platform):
            self.driver.kick(instance_id)
            changed.append(instance_id)
        if changed:
            self.platform.notify_changed()

    def wait(self) -> None:
        timeout = self.interval_s  # at most: the backstop
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
