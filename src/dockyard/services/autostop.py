"""The auto-stop policy (issue 7): changing an instance's, and stopping the instances
whose policy says so (core/autostop.py decides; background/autostop.py calls this)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, select

from dockyard.core.autostop import Policy, stop_cause, summary
from dockyard.core.errors import Conflict, InvalidInput
from dockyard.core.states import Status
from dockyard.db.models import Instance, InstanceEvent, User, utcnow
from dockyard.services import instances, notifications
from dockyard.services.driver import Driver
from dockyard.services.platform import Platform

FIELDS = ("auto_stop_idle_minutes", "auto_stop_max_minutes")
NOTICE_KIND = "autostop"


def set_policy(platform: Platform, user: User, key: str, changes: dict[str, int | None]) -> Instance:
    """Set the given policy fields (None turns one off; others stay), recorded as an event.
    Values are checked by the caller's schema (api/schemas.py)."""
    if not changes:
        raise InvalidInput(f"give {' and/or '.join(FIELDS)} (null turns one off)")
    with platform.sessions.begin() as db:
        instance = instances.get_owned(db, user, key)
        if instance.status == Status.RELEASED:
            raise Conflict(f"instance {instance.name} is released")
        for name, value in changes.items():
            setattr(instance, name, value)
        db.add(InstanceEvent(instance_id=instance.id, from_status=instance.status, to_status=instance.status,
                             cause=f"auto-stop policy set by {user.name}: "
                                   f"{summary(instance.auto_stop_idle_minutes, instance.auto_stop_max_minutes)}"))
    with platform.sessions.begin() as db:
        return db.get(Instance, instance.id)


def stop_due(platform: Platform, driver: Driver) -> list[str]:
    """Stop (never release) each running instance whose policy says so, as a user's stop
    does: a conditional move to stopping, then the driver. The event carries the cause and
    the owner's notification commits with it. Returns the ids stopped."""
    with platform.sessions.begin() as db:
        rows = db.execute(
            select(Instance.id, Instance.name, Instance.owner_id, Instance.container_id, Instance.started_at,
                   Instance.last_ssh_at, Instance.last_jupyter_at, Instance.auto_stop_idle_minutes,
                   Instance.auto_stop_max_minutes)
            .where(Instance.status == Status.RUNNING,
                   or_(Instance.auto_stop_idle_minutes.is_not(None), Instance.auto_stop_max_minutes.is_not(None)))
        ).all()
    now, minute = utcnow(), timedelta(seconds=platform.settings.autostop_minute_s)
    stopped = []
    for r in rows:
        cause = stop_cause(Policy(r.auto_stop_idle_minutes, r.auto_stop_max_minutes), r.started_at, r.last_ssh_at,
                           r.last_jupyter_at, now, minute)
        if cause is None:
            continue
        message = f"instance {r.name} was stopped ({cause}). Its disks are kept; start it again when you need it."

        def notify(db, owner=r.owner_id, message=message):
            notifications.post(db, owner, NOTICE_KIND, message)

        # Only if still running in the same container: a user's stop, the reconciler or an
        # earlier pass may have got there first, and then nothing is done twice.
        if instances.transition(platform, r.id, Status.RUNNING, Status.STOPPING, cause,
                                expected_container=r.container_id, also=notify):
            stopped.append(r.id)
            driver.kick(r.id)
    return stopped
