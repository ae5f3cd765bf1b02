"""The auto-stop policy: when a running instance is stopped on its owner's behalf.

Timers (each warned of first, `warn_minutes` before): N minutes without SSH or Jupyter
activity, N minutes with every GPU under U% busy, N minutes running since the start or the
last "keep running". Without a warning: a stop time, the start command's exit (the
reconciler's) and a named process's exit. Stopping keeps both disks; only the GPUs go back.
Operator limits cap every timer; a user can neither exceed them nor turn them off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from dockyard.core.errors import InvalidInput

MAX_MINUTES = 7 * 24 * 60  # a week
OFF = "off"
MINUTE = timedelta(minutes=1)
DEFAULT_GPU_PERCENT = 5
NO_GPU_READINGS = "cannot fire: no GPU readings"
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m?)?")
# Timer fields, as the API names them, and the words of their operator limit.
TIMERS = {"auto_stop_idle_minutes": "idle stop", "auto_stop_max_minutes": "maximum runtime",
          "auto_stop_gpu_idle_minutes": "GPU-idle stop"}


@dataclass(frozen=True)
class Policy:
    idle_minutes: int | None = None
    max_minutes: int | None = None
    gpu_idle_minutes: int | None = None
    gpu_idle_percent: int = DEFAULT_GPU_PERCENT
    stop_at: datetime | None = None
    warn_minutes: int = 10


@dataclass(frozen=True)
class Activity:
    """What the decision reads about one running instance. `gpu_idle_since`: since when
    every GPU stayed under the policy's percent (None: no readings, the rule cannot fire)."""
    started_at: datetime | None
    last_ssh_at: datetime | None = None
    last_jupyter_at: datetime | None = None
    kept_at: datetime | None = None
    warned_at: datetime | None = None
    gpu_idle_since: datetime | None = None


STOP, WARN, CLEAR = "stop", "warn", "clear"


@dataclass(frozen=True)
class Decision:
    action: str | None  # STOP, WARN (post the warning), CLEAR (a warning no longer stands), None
    cause: str | None = None
    deadline: datetime | None = None  # when a warned stop is due


def parse_minutes(text: str, field: str) -> int | None:
    """'off' (or empty) is None; '90', '90m', '2h' and '1h30m' are minutes, 1 to a week."""
    value = text.strip().lower().replace(" ", "")
    if value in ("", OFF):
        return None
    match = _DURATION.fullmatch(value)
    if not match or not any(match.groups()):
        raise InvalidInput(f"{field}: {text!r} is not a duration; use minutes (30, 30m), hours (2h) or off",
                           field=field)
    minutes = int(match.group(1) or 0) * 60 + int(match.group(2) or 0)
    if not 1 <= minutes <= MAX_MINUTES:
        raise InvalidInput(f"{field}: {text!r} is outside 1 minute to a week ({MAX_MINUTES} minutes)", field=field)
    return minutes


def parse_time(text: str, field: str, now: datetime) -> datetime:
    """An ISO 8601 time with its zone ('2026-12-02T08:00+08:00'), later than `now`."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"{field}: {text!r} is not a time; use 2026-12-02T08:00+08:00", field=field) from None
    return check_future(when, field, now)


def check_future(when: datetime, field: str, now: datetime) -> datetime:
    if when.tzinfo is None:
        raise InvalidInput(f"{field}: {when.isoformat()} has no time zone; add one (+08:00, Z)", field=field)
    if when <= now:
        raise InvalidInput(f"{field}: {when.isoformat()} is in the past", field=field)
    return when.astimezone(timezone.utc)


def describe(minutes: int | None) -> str:
    """'off', '45 min', '2 h', '1 h 30 min'."""
    if minutes is None:
        return OFF
    hours, rest = divmod(minutes, 60)
    return " ".join(part for part in (f"{hours} h" if hours else "", f"{rest} min" if rest else "") if part)


def summary(idle_minutes: int | None, max_minutes: int | None, gpu_idle_minutes: int | None = None,
            gpu_idle_percent: int | None = None, stop_at: datetime | None = None, on_exit: bool = False,
            when_exits: str | None = None) -> str:
    """'idle 30 min, max runtime off' and the other rules that are on."""
    parts = [f"idle {describe(idle_minutes)}", f"max runtime {describe(max_minutes)}"]
    if gpu_idle_minutes is not None:
        parts.append(f"GPUs under {gpu_idle_percent or DEFAULT_GPU_PERCENT}% for {describe(gpu_idle_minutes)}")
    if stop_at is not None:
        parts.append(f"at {stop_at.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC")
    if on_exit:
        parts.append("when the start command exits")
    if when_exits:
        parts.append(f"when process {when_exits} exits")
    return ", ".join(parts)


def within_limits(values: dict[str, int | None], limits: dict[str, int | None]) -> dict[str, int | None]:
    """The timer fields of `values` held to the operator's `limits` (field -> minutes, None:
    no limit): an absent or off timer gets the limit; one over it is refused, naming it."""
    held = dict(values)
    for field, limit in limits.items():
        if limit is None or field not in values:
            continue
        value = values[field]
        if value is None:
            held[field] = limit
        elif value > limit:
            raise InvalidInput(f"{field}: {describe(value)} is over the operator's limit for the "
                               f"{TIMERS[field]}, {describe(limit)}", field=field)
    return held


def capped(minutes: int | None, limit: int | None) -> int | None:
    """A stored timer under a limit the operator may have lowered since it was set."""
    if limit is None:
        return minutes
    return limit if minutes is None else min(minutes, limit)


def decide(policy: Policy, activity: Activity, now: datetime, minute: timedelta = MINUTE) -> Decision:
    """What to do with a running instance now. `minute` is one policy minute (tests shorten it).

    Idle time counts from the latest of the start, the last SSH session, the last Jupyter
    use and the last "keep running", so nothing from before the current start counts.
    A timer's stop comes only after its warning stood, at the first look past its deadline.
    """
    started = activity.started_at
    if started is None:
        return Decision(None)
    if policy.stop_at is not None and now >= policy.stop_at:
        return Decision(STOP, f"auto-stop: the stop time {policy.stop_at.astimezone(timezone.utc):%Y-%m-%d %H:%M} "
                              "UTC came")
    renewed = max(t for t in (started, activity.kept_at) if t is not None)
    timers = []
    if policy.max_minutes is not None:
        timers.append((renewed + policy.max_minutes * minute,
                       f"auto-stop: ran for {describe(policy.max_minutes)}, the policy's maximum runtime"))
    if policy.idle_minutes is not None:
        active = max(t for t in (renewed, activity.last_ssh_at, activity.last_jupyter_at) if t is not None)
        timers.append((active + policy.idle_minutes * minute,
                       f"auto-stop: no SSH or Jupyter activity for {describe(policy.idle_minutes)}"))
    if policy.gpu_idle_minutes is not None and activity.gpu_idle_since is not None:
        timers.append((max(renewed, activity.gpu_idle_since) + policy.gpu_idle_minutes * minute,
                       f"auto-stop: every GPU under {policy.gpu_idle_percent}% for "
                       f"{describe(policy.gpu_idle_minutes)}"))
    # A warning from before this start or the last keep-running stands for nothing.
    warned = activity.warned_at is not None and activity.warned_at >= renewed
    if timers:
        deadline, cause = min(timers)
        if now >= deadline - policy.warn_minutes * minute:
            if not warned:
                return Decision(WARN, cause, deadline)
            return Decision(STOP, cause) if now >= deadline else Decision(None)
    return Decision(CLEAR) if activity.warned_at is not None else Decision(None)


@dataclass
class GpuIdle:
    """One instance's GPU-idle state, carried from one look at its samples to the next."""
    since: float | None = None  # epoch seconds since when every GPU stayed under the percent
    seen_until: float = 0.0  # the newest sample already looked at


def advance_gpu_idle(state: GpuIdle, samples: list, percent: float) -> GpuIdle:
    """Fold the samples newer than the last look (oldest first; each with .at and .gpus,
    every GPU with .util_percent, None when unread) into `state`. A sample counts only if
    every GPU in it was read; one GPU at or over `percent` restarts the idle time. Read
    newest first, stopping at the first busy sample: a pass costs little however many
    samples came since the last (the first look after a restart sees a whole window)."""
    if not samples or samples[-1].at <= state.seen_until:
        return state
    oldest_idle = None
    for sample in reversed(samples):
        if sample.at <= state.seen_until:
            break
        utils = [g.util_percent for g in sample.gpus]
        if not utils or None in utils:
            continue
        if max(utils) >= percent:
            return GpuIdle(sample.at, samples[-1].at)  # busy then: idle at best from there
        oldest_idle = sample.at
    # All new readings idle: idle since before them, or (nothing known earlier) since the first.
    return GpuIdle(state.since if state.since is not None else oldest_idle, samples[-1].at)
