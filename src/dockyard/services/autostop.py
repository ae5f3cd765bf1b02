"""The auto-stop policy: changing an instance's, keeping one running, and stopping the
instances whose policy says so (core/autostop.py decides; background/autostop.py calls
`Stopper.run`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import or_, select

from dockyard.config import Settings
from dockyard.core.activity import is_running, running_names
from dockyard.core.autostop import (CLEAR, DEFAULT_GPU_PERCENT, NO_GPU_READINGS, STOP, WARN, Activity, Decision,
                                    GpuIdle, Policy, advance_gpu_idle, capped, check_future, decide, summary,
                                    within_limits)
from dockyard.core.errors import Conflict, InvalidInput
from dockyard.core.kinds import NoticeKind
from dockyard.core.metrics import DiskUsage
from dockyard.core.states import Status
from dockyard.db.models import Instance, InstanceEvent, User, utcnow
from dockyard.runtimes.base import BUSYBOX, Feature, RuntimeError_
from dockyard.runtimes.instances import Held
from dockyard.services import instances, lifecycle, notifications
from dockyard.services.held import COLUMNS as held_columns, held, held_of
from dockyard.services.platform import Platform
from dockyard.services.work import Driving

GIB = 1024**3

FIELDS = ("auto_stop_idle_minutes", "auto_stop_max_minutes", "auto_stop_gpu_idle_minutes",
          "auto_stop_gpu_idle_percent", "auto_stop_at", "auto_stop_on_exit", "auto_stop_when_exits")
NOTICE_KIND = NoticeKind.AUTOSTOP
WARNING_KIND = NoticeKind.AUTOSTOP_WARNING
WARNING = "auto-stop warning"
# Every process's comm and arguments (split by \x01), one a line, from /proc (images need no procps):
# a fixed script of the platform's busybox (runtimes/docker_tools.py), nothing a user gave in it,
# bounded in time and output.
PROCESS_LIST = ["sh", "-c", f"B={BUSYBOX}; for p in /proc/[0-9]*; do "
                            "printf '%s\\t' \"$($B cat $p/comm)\"; $B tr '\\0' '\\001' < $p/cmdline; echo; done 2>/dev/null"]
PROCESS_LIST_TIMEOUT_S, PROCESS_LIST_MAX_BYTES = 15, 256 * 1024
GpuSamples = Callable[[str], list]  # instance id -> its samples, oldest first (core/metrics.py's Sample)
SystemDisks = Callable[[str], DiskUsage | None]  # instance id -> what it wrote to its system disk


def limits(settings: Settings) -> dict[str, int | None]:
    return {"auto_stop_idle_minutes": settings.autostop_idle_limit_minutes,
            "auto_stop_max_minutes": settings.autostop_max_limit_minutes,
            "auto_stop_gpu_idle_minutes": settings.autostop_gpu_idle_limit_minutes}


def rules_for_create(settings: Settings, given: dict, named: set[str]) -> dict:
    """A create's rules: the timers its user did not name get the operator's defaults, then
    every timer is held to the operator's limits; a stop time must be ahead."""
    defaults = {"auto_stop_idle_minutes": settings.autostop_default_idle_minutes,
                "auto_stop_max_minutes": settings.autostop_default_max_minutes,
                "auto_stop_gpu_idle_minutes": settings.autostop_default_gpu_idle_minutes}
    rules = {field: given.get(field) if field in named else defaults[field] for field in defaults}
    rules = within_limits(rules, limits(settings))
    rules["auto_stop_gpu_idle_percent"] = given.get("auto_stop_gpu_idle_percent")
    rules["auto_stop_on_exit"] = bool(given.get("auto_stop_on_exit"))
    if given.get("auto_stop_at") is not None:
        rules["auto_stop_at"] = check_future(given["auto_stop_at"], "auto_stop_at", utcnow())
    return rules


def process_names(platform: Platform, node: str, now: Held) -> set[str]:
    _, output = platform.instances(node).tool(now, PROCESS_LIST, timeout_s=PROCESS_LIST_TIMEOUT_S,
                                              max_bytes=PROCESS_LIST_MAX_BYTES)
    return running_names(output.decode(errors="replace"))


def describe_policy(instance: Instance) -> str:
    return summary(instance.auto_stop_idle_minutes, instance.auto_stop_max_minutes,
                   instance.auto_stop_gpu_idle_minutes, instance.auto_stop_gpu_idle_percent, instance.auto_stop_at,
                   instance.auto_stop_on_exit, instance.auto_stop_when_exits)


def set_policy(platform: Platform, user: User, key: str, changes: dict) -> Instance:
    """Set the given policy fields (None turns one off, or to the operator's limit; others
    stay), recorded as an event. Bounds are checked by the caller's model (core/inputs.py);
    limits, the stop time and the process here, before anything changes."""
    if not changes:
        raise InvalidInput(f"give one or more of {', '.join(FIELDS)} (null turns one off)")
    changes = within_limits(changes, limits(platform.settings))
    if changes.get("auto_stop_at") is not None:
        changes["auto_stop_at"] = check_future(changes["auto_stop_at"], "auto_stop_at", utcnow())
    if "auto_stop_on_exit" in changes:
        changes["auto_stop_on_exit"] = bool(changes["auto_stop_on_exit"])
    with platform.sessions.begin() as db:
        instance = instances.get_owned(db, user, key)
        if instance.status == Status.RELEASED:
            raise Conflict(f"instance {instance.name} is released")
        where = (instance.status, instance.node_name, held(instance))
    wanted = changes.get("auto_stop_when_exits")
    if wanted is not None:
        _check_process(platform, where, wanted)
    with platform.sessions.begin() as db:
        instance = instances.get_owned(db, user, key)
        for name, value in changes.items():
            setattr(instance, name, value)
        db.add(InstanceEvent(instance_id=instance.id, from_status=instance.status, to_status=instance.status,
                             cause=f"auto-stop policy set by {user.name}: {describe_policy(instance)}"))
    with platform.sessions.begin() as db:
        return db.get(Instance, instance.id)


def _check_process(platform: Platform, where: tuple, wanted: str) -> None:
    status, node, now = where
    field = "auto_stop_when_exits"
    if status != Status.RUNNING or not now.container_id:
        raise Conflict(f"{field}: the instance is {status}; a process can be watched only while it runs", field=field)
    try:
        names = process_names(platform, node, now)
    except RuntimeError_ as exc:
        raise Conflict(f"{field}: the instance's processes could not be listed ({exc})", field=field) from None
    if not is_running(names, wanted):
        raise InvalidInput(f"{field}: no process named {wanted!r} is running in the instance", field=field)


def keep(platform: Platform, user: User, key: str) -> Instance:
    """Keep running: a warned stop is called off and the timers count from now."""
    with platform.sessions.begin() as db:
        instance = instances.get_owned(db, user, key)
        if instance.status != Status.RUNNING or instance.auto_stop_warned_at is None:
            raise Conflict(f"no auto-stop is pending for instance {instance.name}")
        instance.auto_stop_warned_at, instance.auto_stop_kept_at = None, utcnow()
        db.add(InstanceEvent(instance_id=instance.id, from_status=instance.status, to_status=instance.status,
                             cause=f"auto-stop: kept running by {user.name}; its timers count from now"))
    platform.notify_changed()
    with platform.sessions.begin() as db:
        return db.get(Instance, instance.id)


def notes(instance: Instance, simulated: list[bool]) -> list[str]:
    """Why a rule of the instance's cannot fire: simulated GPUs (or none) give no readings,
    so its GPU-idle rule stands but never stops it."""
    if instance.auto_stop_gpu_idle_minutes is not None and all(simulated):
        return [NO_GPU_READINGS]
    return []


@dataclass
class Running:
    """A running instance, as a stop needs it."""
    id: str
    name: str
    owner_id: int
    node_name: str
    held: Held


@dataclass
class Row(Running):
    """One running instance with a rule on, as the pass reads it."""
    policy: Policy
    activity: Activity
    when_exits: str | None


COLUMNS = (Instance.id, Instance.name, Instance.owner_id, Instance.node_name, *held_columns,
           Instance.started_at, Instance.last_ssh_at, Instance.last_jupyter_at, Instance.auto_stop_idle_minutes,
           Instance.auto_stop_max_minutes, Instance.auto_stop_gpu_idle_minutes, Instance.auto_stop_gpu_idle_percent,
           Instance.auto_stop_at, Instance.auto_stop_when_exits, Instance.auto_stop_warned_at,
           Instance.auto_stop_kept_at)


class Stopper:
    """One pass after another over the running instances. It carries each instance's GPU-idle
    state from pass to pass (in memory: after a restart GPU idle time counts afresh, so a
    restart never stops anything early). `gpu_samples` is the injectable GPU source: the
    metrics sampler's store, or recorded series in tests; `system_disks` the same for what
    instances wrote to their system disks."""

    def __init__(self, platform: Platform, driver: Driving, gpu_samples: GpuSamples,
                 clock: Callable[[], datetime] = utcnow, system_disks: SystemDisks = lambda _: None):
        self.platform, self.driver, self.gpu_samples, self.clock = platform, driver, gpu_samples, clock
        self.system_disks = system_disks
        self.gpu: dict[str, GpuIdle] = {}

    def rows(self) -> list[Row]:
        s = self.platform.settings
        with self.platform.sessions.begin() as db:
            found = db.execute(select(*COLUMNS).where(Instance.status == Status.RUNNING, or_(
                Instance.auto_stop_idle_minutes.is_not(None), Instance.auto_stop_max_minutes.is_not(None),
                Instance.auto_stop_gpu_idle_minutes.is_not(None), Instance.auto_stop_at.is_not(None),
                Instance.auto_stop_when_exits.is_not(None),
                # operator limits apply to every instance
                *([Instance.id.is_not(None)] if any(limits(s).values()) else [])))).all()
        return [Row(r.id, r.name, r.owner_id, r.node_name, held_of(r), Policy(
            capped(r.auto_stop_idle_minutes, s.autostop_idle_limit_minutes),
            capped(r.auto_stop_max_minutes, s.autostop_max_limit_minutes),
            capped(r.auto_stop_gpu_idle_minutes, s.autostop_gpu_idle_limit_minutes),
            DEFAULT_GPU_PERCENT if r.auto_stop_gpu_idle_percent is None else r.auto_stop_gpu_idle_percent,
            r.auto_stop_at, s.autostop_warn_minutes),
            Activity(r.started_at, r.last_ssh_at, r.last_jupyter_at, r.auto_stop_kept_at, r.auto_stop_warned_at),
            r.auto_stop_when_exits) for r in found]

    def decisions(self, rows: list[Row], now: datetime) -> list[tuple[Row, Decision]]:
        """The pure part of a pass: the GPU samples folded in and each instance judged."""
        minute = timedelta(seconds=self.platform.settings.autostop_minute_s)
        self.gpu = {r.id: self.gpu[r.id] for r in rows if r.id in self.gpu}  # forget stopped ones
        judged = []
        for row in rows:
            activity = row.activity
            if row.policy.gpu_idle_minutes is not None:
                state = self.gpu[row.id] = advance_gpu_idle(self.gpu.get(row.id, GpuIdle()),
                                                            self.gpu_samples(row.id), row.policy.gpu_idle_percent)
                if state.since is not None:
                    activity = Activity(activity.started_at, activity.last_ssh_at, activity.last_jupyter_at,
                                        activity.kept_at, activity.warned_at,
                                        datetime.fromtimestamp(state.since, timezone.utc))
            decision = decide(row.policy, activity, now, minute)
            if decision.action is not None:
                judged.append((row, decision))
        return judged

    def run(self) -> list[str]:
        """One pass: stop (never release) what is due, post due warnings, withdraw stale
        ones. Returns the ids stopped."""
        rows = self.rows()
        judged = self.decisions(rows, self.clock())
        judged += [(row, Decision(STOP, f"auto-stop: process {row.when_exits} exited"))
                   for row in rows if row.when_exits and self._process_gone(row)]
        judged += self._system_disks_over()
        stopped = []
        for row, decision in judged:
            if row.id in stopped:
                continue
            if decision.action == STOP and self._stop(row, decision.cause):
                stopped.append(row.id)
            elif decision.action == WARN:
                self._warn(row, decision)
            elif decision.action == CLEAR:
                with self.platform.sessions.begin() as db:
                    db.get(Instance, row.id).auto_stop_warned_at = None
        return stopped

    def _system_disks_over(self) -> list[tuple[Running, Decision]]:
        """Instances that wrote more than `system_disk_gb` to their system disk on a node
        whose engine cannot hold them to it: stopped, as the engine would have refused the
        writes, so that one tenant cannot fill the node's disk."""
        limit_gb = self.platform.settings.system_disk_gb
        if not limit_gb:
            return []
        with self.platform.sessions.begin() as db:
            found = db.execute(select(Instance.id, Instance.name, Instance.owner_id, Instance.node_name,
                                      *held_columns)
                               .where(Instance.status == Status.RUNNING, Instance.container_id.is_not(None))).all()
        over = []
        for r in found:
            runtime = self.platform.runtimes.get(r.node_name)
            reading = self.system_disks(r.id)
            if (runtime is None or runtime.lacks(Feature.SYSTEM_DISK_LIMIT) is None or reading is None
                    or reading.used <= limit_gb * GIB):
                continue
            over.append((Running(r.id, r.name, r.owner_id, r.node_name, held_of(r)), Decision(
                STOP, f"its system disk holds {reading.used / GIB:.1f} GB written, over the {limit_gb} GB limit; "
                      f"delete files there after starting it again, and keep large ones on the data disk")))
        return over

    def _process_gone(self, row: Row) -> bool:
        if not row.held.container_id:
            return False
        try:
            return not is_running(process_names(self.platform, row.node_name, row.held), row.when_exits)
        except RuntimeError_:
            return False  # the engine cannot say: the reconciler deals with it, this waits

    def _warn(self, row: Row, decision: Decision) -> None:
        when = decision.deadline.astimezone(timezone.utc)
        cause = decision.cause.removeprefix("auto-stop: ")
        words = f"{WARNING}: {cause}; it stops at {when:%H:%M:%S} UTC unless kept running"
        with self.platform.sessions.begin() as db:
            instance = db.get(Instance, row.id)
            if instance.status != Status.RUNNING:
                return
            instance.auto_stop_warned_at = self.clock()
            db.add(InstanceEvent(instance_id=row.id, from_status=Status.RUNNING, to_status=Status.RUNNING,
                                 cause=words))
            notifications.post(db, row.owner_id, WARNING_KIND,
                               f"instance {row.name} will be stopped ({cause}) at {when:%H:%M} UTC unless you keep "
                               f"it running: `dockyard keep {row.name}` or the console's Keep running button.")
        self.platform.notify_changed()

    def _stop(self, row: Running, cause: str) -> bool:
        """As a user's stop: a conditional move to stopping, then the driver. The event
        carries the cause and the owner's notification commits with it."""
        message = f"instance {row.name} was stopped ({cause}). Its disks are kept; start it again when you need it."

        def notify(db):
            notifications.post(db, row.owner_id, NOTICE_KIND, message)

        # Only if still running in the same container: a user's stop, the reconciler or an
        # earlier pass may have got there first, and then nothing is done twice.
        if lifecycle.transition(self.platform, row.id, Status.RUNNING, Status.STOPPING, cause,
                                expected_container=row.held.container_id, also=notify, auto_stop_warned_at=None):
            self.driver.kick(row.id)
            return True
        return False
