"""No transitional status for ever: an instance that stays creating, starting, stopping
or releasing past its deadline is moved on with a reason, its GPUs returned and its
owner told. The reconciler runs this every pass.

A create that overran fails; a start that overran is stopped (it can be started again).
A stop that overran has its container killed first, so no container keeps GPUs that are
handed to someone else; a release that overran fails with its data kept, to be released
again. When the engine cannot be reached to kill a container, the instance is left as
it is: GPU safety comes first. Instances on an offline node wait for it
(services/liveness.py).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select

from dockyard.core.errors import NotFound
from dockyard.core.kinds import NoticeKind
from dockyard.core.states import Status
from dockyard.db.models import Instance, Node, utcnow
from dockyard.runtimes.base import RuntimeError_
from dockyard.runtimes.instances import Held
from dockyard.services import notifications
from dockyard.services.held import held
from dockyard.services.lifecycle import transition
from dockyard.services.platform import Platform

log = logging.getLogger(__name__)

# What an overrun status becomes, and what the user is told it means.
OUTCOME = {
    Status.CREATING: (Status.FAILED, "did not finish creating"),
    Status.STARTING: (Status.STOPPED, "did not finish starting; start it again"),
    Status.STOPPING: (Status.STOPPED, "did not stop: its container was killed"),
    Status.RELEASING: (Status.FAILED, "did not finish releasing; its data is kept, release it again"),
    # The copies on the other node are removed by the migration sweep (services/migration.py).
    Status.MIGRATING: (Status.STOPPED, "did not finish migrating; it stays on its node with its disks"),
}


def deadline_s(platform: Platform, status: Status) -> float:
    settings = platform.settings
    return {
        Status.CREATING: settings.creating_timeout_s,
        Status.STARTING: settings.starting_timeout_s,
        Status.STOPPING: settings.stopping_timeout_s,
        Status.RELEASING: settings.releasing_timeout_s,
        Status.MIGRATING: settings.migrating_timeout_s,
    }[status]


def enforce(platform: Platform, counting_since: datetime) -> None:
    """`counting_since`: when this server started; time it was down does not count."""
    now = utcnow()
    with platform.sessions.begin() as db:
        overdue = [
            (i.id, Status(i.status), i.node_name, held(i), i.owner_id, i.name)
            for i in db.scalars(select(Instance).join(Node, Node.name == Instance.node_name).where(
                Instance.status.in_([s.value for s in OUTCOME]), Node.online.is_(True)))  # else it waits on the node
            if max(i.updated_at, counting_since) + timedelta(seconds=deadline_s(platform, Status(i.status))) < now
        ]
    for instance_id, status, node, now_held, owner_id, name in overdue:
        if status == Status.STOPPING and now_held.container_id and not _killed(platform, node, now_held):
            continue
        target, meaning = OUTCOME[status]
        cause = f"{meaning} (past its {deadline_s(platform, status):.0f} s deadline); GPUs returned"
        log.warning("instance %s %s past its deadline: now %s", instance_id, status, target)
        transition(platform, instance_id, status, target, cause,
                   also=lambda db, owner_id=owner_id, name=name, cause=cause:
                   notifications.post(db, owner_id, NoticeKind.INSTANCE, f"instance {name} {cause}"))


def _killed(platform: Platform, node: str, now: Held) -> bool:
    try:
        platform.instances(node).kill(now)
        return True
    except (RuntimeError_, NotFound) as exc:  # refused, or the node is not connected
        log.warning("container %s on %s could not be killed past its stop deadline: %s", now.container_id, node, exc)
        return False

