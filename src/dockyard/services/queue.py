"""The start queue's reading and joining (rules in core/queue.py, docs/queue.md): who
waits for which node's GPUs, in what order, and what a request that joins writes. The
dispatcher that starts them is background/dispatcher.py."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dockyard.core import queue as rules
from dockyard.core.errors import Conflict
from dockyard.core.placement import ANY_MODEL, NodeView, SharedGpu
from dockyard.core.sharing import MIG
from dockyard.core.states import Status
from dockyard.db.models import Instance, utcnow



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


# ---- joining and leaving -------------------------------------------------------------


def queue_fields(db: Session, timeout_minutes: int | None, next_status: Status, minute_s: float) -> dict:
    """The columns of an instance that joins the queue now. Called under the allocation
    lock, so the arrival number is unique and in order. `minute_s`: the length of a
    minute of the timeout (the queue_minute_s setting)."""
    now = utcnow()
    last = db.scalar(select(func.max(Instance.queue_seq))) or 0
    return {"status": Status.QUEUED, "queue_seq": last + 1, "queued_at": now, "queue_next": next_status.value,
            "queue_deadline": now + timedelta(seconds=timeout_minutes * minute_s) if timeout_minutes else None}


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


def waited(queued_at: datetime | None) -> str:
    seconds = int((utcnow() - queued_at).total_seconds()) if queued_at else 0
    return f"{seconds // 60} min {seconds % 60} s"
