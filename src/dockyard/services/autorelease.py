"""Releasing instances left stopped (docs/volumes.md): after N days stopped (the operator's
`auto_release_days`, or fewer where the user asked), with notices 3 days and 1 day before.
The release keeps the data disk as a volume unless the user chose otherwise, like any
release. `now` is passed in, so tests drive the same pass with a clock of their own."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from dockyard.core.kinds import NoticeKind
from dockyard.core.states import Status
from dockyard.db.models import Instance, InstanceEvent
from dockyard.services import lifecycle, notifications
from dockyard.services.platform import Platform

NOTICE_KIND = NoticeKind.RELEASE
# (days before the release, level): a notice is sent once per stop at each level.
NOTICES = ((1, 2), (3, 1))


def due(days: int, stopped_for: timedelta, day: timedelta, level: int) -> tuple[str, int] | None:
    """What is due for an instance stopped `stopped_for`: ("release", 0), ("notice", level)
    for the most urgent notice not sent yet, or None."""
    if stopped_for >= days * day:
        return "release", 0
    for before, notice_level in NOTICES:
        if stopped_for >= (days - before) * day and level < notice_level:
            return "notice", notice_level
    return None


def run_pass(platform: Platform, now: datetime) -> list[str]:
    """Send the notices that are due and move the instances due to `releasing` (the
    caller kicks the driver). Returns the ids released."""
    settings = platform.settings
    day = timedelta(seconds=settings.autorelease_day_s)
    last_stop = (select(InstanceEvent.instance_id, func.max(InstanceEvent.at).label("at"))
                 .where(InstanceEvent.to_status == Status.STOPPED).group_by(InstanceEvent.instance_id).subquery())
    with platform.sessions.begin() as db:
        rows = db.execute(
            select(Instance.id, Instance.name, Instance.owner_id, Instance.auto_release_days,
                   Instance.keep_data_on_release, Instance.release_notice_level, Instance.release_notice_stop,
                   last_stop.c.at)
            .join(last_stop, last_stop.c.instance_id == Instance.id)
            .where(Instance.status == Status.STOPPED, Instance.cluster_id.is_(None))
        ).all()
    released = []
    for r in rows:
        days = min(r.auto_release_days or settings.auto_release_days, settings.auto_release_days)
        level = r.release_notice_level if r.release_notice_stop == r.at else 0  # a new stop starts again
        action = due(days, now - r.at, day, level)
        if action is None:
            continue
        data = "its data disk will be kept as a volume" if r.keep_data_on_release else "its data disk will be deleted"
        if action[0] == "notice":
            left = days - (now - r.at) / day
            message = (f"instance {r.name} has been stopped since {r.at:%Y-%m-%d %H:%M} UTC: it will be released in "
                       f"{max(left, 0):.1f} days unless you start it; {data}")
            with platform.sessions.begin() as db:
                done = db.execute(update(Instance).where(Instance.id == r.id, Instance.status == Status.STOPPED)
                                  .values(release_notice_level=action[1], release_notice_stop=r.at)).rowcount
                if done:
                    notifications.post(db, r.owner_id, NOTICE_KIND, message)
            continue
        cause = f"released after {days} days stopped (auto-release); " + data.replace("will be", "is")

        def notify(db, owner=r.owner_id, message=f"instance {r.name} was {cause}"):
            notifications.post(db, owner, NOTICE_KIND, message)

        if lifecycle.transition(platform, r.id, Status.STOPPED, Status.RELEASING, cause, also=notify):
            released.append(r.id)
    return released
