"""Nodes that vanish and return. A watch (background/liveness.py) pings every engine on
a thread of its own, so an engine call hung elsewhere cannot hold it up; one that has
not answered for `node_grace_s` goes offline: no new placements there, and its instances
that were running (or on their way) become `lost`, dated when the node was last seen,
which is where their billing stops. When it answers again they come back `stopped` with
their disks, and the node is online again only after its containers have been looked at
(so none still runs on GPUs that could be handed out). Users are told both.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Callable

from sqlalchemy import select

from dockyard.core.kinds import NoticeKind
from dockyard.core.states import Status
from dockyard.db.models import Instance, Node, utcnow
from dockyard.services import notifications
from dockyard.services.lifecycle import transition
from dockyard.services.platform import Platform

log = logging.getLogger(__name__)
# What a lost instance was doing: it held GPUs on the node.
LOSABLE = (Status.CREATING, Status.STARTING, Status.RUNNING, Status.STOPPING)


def check(platform: Platform, reconcile_node: Callable[[str], None]) -> None:
    """Ping the nodes (one never connected does not answer); `reconcile_node` looks at a
    returned node's containers before it is put back online."""
    returned = set()
    now = utcnow()
    for config in platform.settings.node_configs():
        name, runtime = config.name, platform.runtimes.get(config.name)
        alive = runtime is not None and runtime.alive()
        with platform.sessions.begin() as db:
            node = db.get(Node, name)
            if node is None:
                continue
            if alive:
                node.last_seen_at = now
                if not node.online:
                    returned.add(name)
                continue
            seen = node.last_seen_at
            overdue = seen is None or seen + timedelta(seconds=platform.settings.node_grace_s) < now
            if not overdue:
                continue
            if node.online:
                log.warning("node %s has not answered since %s: offline", name, seen)
                node.online = False
                node.status_reason = f"not answering since {seen:%Y-%m-%d %H:%M:%S} UTC" if seen else "not answering"
            # Last seen running: when the node last answered, or when it got there if later.
            losing = [(i.id, Status(i.status), i.owner_id, i.name, max(filter(None, (seen, i.updated_at))))
                      for i in db.scalars(select(Instance).where(
                          Instance.node_name == name, Instance.status.in_([s.value for s in LOSABLE])))]
        for instance_id, status, owner_id, instance_name, last in losing:
            _move(platform, instance_id, status, Status.LOST, owner_id, instance_name,
                  f"node {name} stopped answering: lost; billing stopped when it was last seen. It comes back "
                  "stopped, with its disks, when the node returns", at=last)
    for name in returned:
        with platform.sessions.begin() as db:
            lost = [(i.id, i.owner_id, i.name) for i in db.scalars(
                select(Instance).where(Instance.node_name == name, Instance.status == Status.LOST))]
        for instance_id, owner_id, instance_name in lost:
            _move(platform, instance_id, Status.LOST, Status.STOPPED, owner_id, instance_name,
                  f"node {name} answers again: stopped, with its disks; start it again")
        try:
            reconcile_node(name)
        except Exception:
            log.exception("node %s answers again, but reconciling it failed; next pass retries", name)
            continue
        _back_online(platform, name)


def _back_online(platform: Platform, name: str) -> None:
    with platform.sessions.begin() as db:
        node = db.get(Node, name)
        node.online, node.status_reason = True, None
    log.info("node %s answers again: online", name)
    platform.notify_changed()


def _move(platform, instance_id, expected, target, owner_id, name, cause, at=None) -> None:
    transition(platform, instance_id, expected, target, cause, at=at,
               also=lambda db: notifications.post(db, owner_id, NoticeKind.NODE, f"instance {name}: {cause}"))
