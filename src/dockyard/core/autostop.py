"""The auto-stop policy (issue 7): when a running instance is stopped on its owner's behalf.

An instance may stop after N minutes without SSH or Jupyter activity, and/or after N
minutes running since its last start. Stopping keeps both disks; only the GPUs go back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from dockyard.core.errors import InvalidInput

MAX_MINUTES = 7 * 24 * 60  # a week
OFF = "off"
MINUTE = timedelta(minutes=1)
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m?)?")


@dataclass(frozen=True)
class Policy:
    idle_minutes: int | None = None
    max_minutes: int | None = None


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


def describe(minutes: int | None) -> str:
    """'off', '45 min', '2 h', '1 h 30 min'."""
    if minutes is None:
        return OFF
    hours, rest = divmod(minutes, 60)
    return " ".join(part for part in (f"{hours} h" if hours else "", f"{rest} min" if rest else "") if part)


def summary(idle_minutes: int | None, max_minutes: int | None) -> str:
    """'idle 30 min, max runtime off'."""
    return f"idle {describe(idle_minutes)}, max runtime {describe(max_minutes)}"


def stop_cause(policy: Policy, started_at: datetime | None, last_ssh_at: datetime | None,
               last_jupyter_at: datetime | None, now: datetime, minute: timedelta = MINUTE) -> str | None:
    """Why a running instance should stop now, or None to keep it running.

    Idle time counts from the latest of the start, the last SSH session and the last
    Jupyter request, so activity from before the current start does not count against it.
    `minute` is one policy minute (tests shorten it).
    """
    if started_at is None:
        return None
    if policy.max_minutes is not None and now - started_at >= policy.max_minutes * minute:
        return f"auto-stop: ran for {describe(policy.max_minutes)}, the policy's maximum runtime"
    if policy.idle_minutes is not None:
        active = max(t for t in (started_at, last_ssh_at, last_jupyter_at) if t is not None)
        if now - active >= policy.idle_minutes * minute:
            return f"auto-stop: no SSH or Jupyter activity for {describe(policy.idle_minutes)}"
    return None
