"""The console's live instance list: the rows as its templates show them, and what the
Server-Sent Events stream sends when they change."""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.core.states import Status
from dockyard.db.models import Instance, User
from dockyard.services import autostop, instances, instance_views
from dockyard.services import instance_actions as actions
from dockyard.services.platform import Platform
from dockyard.web.autostop import rule_values
from dockyard.web.pages import unread_notifications


def instance_rows(platform: Platform, db: Session, user: User, only: set[str] | None = None) -> list[dict]:
    """The user's live instances for the list and the page: the read model's views
    (services/instance_views.py, a fixed number of queries), as the templates show them."""
    found = [i for i in instances.list_instances(db, user) if i.owner_id == user.id and (only is None or i.id in only)]
    out = []
    for i, v in zip(found, instance_views.views(platform, db, found, user)):
        out.append({
            "id": v.id, "name": v.name, "status": v.status, "status_reason": v.status_reason, "node": v.node,
            "image": v.image, "gpu_model": v.gpu_model, "gpu_count": v.gpu_count, "gpu_share": v.gpu_share,
            "no_gpu": v.no_gpu, "gpus": [g.index for g in v.gpus], "ssh": v.ssh_command,
            "auto_stop_idle": v.auto_stop_idle_minutes, "auto_stop_max": v.auto_stop_max_minutes,
            "queue_position": v.queue_position,  # None unless queued
            "auto_stop_gpu_idle": v.auto_stop_gpu_idle_minutes, **rule_values(i),
            "auto_stop_rules": autostop.describe_policy(i), "auto_stop_pending": v.auto_stop_pending,
            "auto_stop_notes": v.auto_stop_notes,
            "started_at": v.started_at.isoformat() if v.started_at else None,
            "created_at": v.created_at.isoformat(),
            "price": v.price_per_hour, "cost": v.cost_so_far,
            "lacks": actions.lacking(platform, i),
        })
    return out


def message(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


class InstanceWatch:
    """One stream's view of a user's instances: what it last sent, and the messages
    that bring a page up to date after the platform changes."""

    def __init__(self, platform: Platform, user: User) -> None:
        self.platform, self.user = platform, user
        self.generation = platform.generation
        self.known = self._snapshot()
        self.ops_seen = None  # first: the operations running now (progress bars)

    def _snapshot(self) -> dict[str, tuple]:
        with self.platform.reads.begin() as db:
            return {r[0]: tuple(r[1:]) for r in db.execute(
                select(Instance.id, Instance.status, Instance.updated_at, Instance.no_gpu)
                .where(Instance.owner_id == self.user.id, Instance.status != Status.RELEASED))}

    def operations(self) -> list[str]:
        """The progress of long operations since the last call (in memory: no database)."""
        self.ops_seen, ops = self.platform.operations.changes(self.user, self.ops_seen)
        return [message("operation", op) for op in ops]

    def stale(self) -> bool:
        return self.platform.generation != self.generation

    def changes(self) -> list[str]:
        """`instance` rows for the instances that changed, `gone` for those released, and
        the unread count (a stop by policy or for the balance comes with a notification)."""
        self.generation = self.platform.generation
        now = self._snapshot()
        changed = {k for k, v in now.items() if self.known.get(k) != v}
        gone = set(self.known) - set(now)
        self.known = now
        out = []
        if changed:
            with self.platform.reads.begin() as db:
                out += [message("instance", row) for row in instance_rows(self.platform, db, self.user, changed)]
            out.append(message("notices", {"unread": unread_notifications(self.platform, self.user.id)}))
        return out + [message("gone", {"id": instance_id}) for instance_id in sorted(gone)]
