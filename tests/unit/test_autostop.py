"""The auto-stop rule and the duration parser (pure)."""

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard.core.autostop import MAX_MINUTES, Policy, describe, parse_minutes, stop_cause
from dockyard.core.errors import InvalidInput

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.mark.parametrize("text, minutes", [
    ("30", 30), ("30m", 30), ("2h", 120), ("1h30m", 90), ("1h30", 90), (" 45 M ", 45), ("10080", MAX_MINUTES),
    ("168h", MAX_MINUTES), ("off", None), ("OFF", None), ("", None),
])
def test_durations_parse_to_minutes(text, minutes):
    assert parse_minutes(text, "idle") == minutes


@pytest.mark.parametrize("text, words", [
    ("0", ["outside"]), ("10081", ["outside", "10080"]), ("169h", ["outside"]), ("-5", ["not a duration"]),
    ("1.5h", ["not a duration"]), ("soon", ["not a duration"]), ("h", ["not a duration"]), ("m", ["not a duration"]),
    ("30s", ["not a duration"]),
])
def test_bad_durations_are_refused_naming_the_field(text, words):
    with pytest.raises(InvalidInput) as refused:
        parse_minutes(text, "auto_stop_idle")
    assert refused.value.field == "auto_stop_idle"
    assert refused.value.message.startswith("auto_stop_idle: ")
    for word in words:
        assert word in refused.value.message


@given(st.integers(min_value=1, max_value=MAX_MINUTES))
def test_describe_and_parse_round_trip(minutes):
    assert parse_minutes(describe(minutes).replace(" ", "").replace("min", "m"), "x") == minutes


def test_describe():
    assert [describe(m) for m in (None, 45, 60, 90, 1440)] == ["off", "45 min", "1 h", "1 h 30 min", "24 h"]


def test_no_policy_never_stops():
    assert stop_cause(Policy(), at(0), None, None, at(10 * MAX_MINUTES)) is None


def test_idle_counts_from_the_start_without_activity():
    policy = Policy(idle_minutes=30)
    assert stop_cause(policy, at(0), None, None, at(29.9)) is None
    assert stop_cause(policy, at(0), None, None, at(30)) == "auto-stop: no SSH or Jupyter activity for 30 min"


def test_idle_counts_from_the_latest_activity():
    policy = Policy(idle_minutes=30)
    assert stop_cause(policy, at(0), at(20), None, at(45)) is None  # SSH 25 min ago
    assert stop_cause(policy, at(0), at(5), at(40), at(65)) is None  # Jupyter 25 min ago
    assert stop_cause(policy, at(0), at(5), at(40), at(70)) is not None


def test_activity_before_the_current_start_does_not_count():
    policy = Policy(idle_minutes=30)
    # A session from the previous run, long ago: the start itself is the latest activity.
    assert stop_cause(policy, at(100), at(10), at(20), at(120)) is None
    assert stop_cause(policy, at(100), at(10), at(20), at(130)) is not None


def test_max_runtime_stops_even_an_active_instance():
    policy = Policy(idle_minutes=30, max_minutes=120)
    assert stop_cause(policy, at(0), at(119), at(119), at(119.5)) is None
    assert stop_cause(policy, at(0), at(119), at(119), at(120)) == (
        "auto-stop: ran for 2 h, the policy's maximum runtime")


def test_an_instance_not_started_is_not_judged():
    assert stop_cause(Policy(idle_minutes=1, max_minutes=1), None, None, None, at(100)) is None


def test_the_policy_minute_can_be_shortened():
    policy, second = Policy(idle_minutes=2), timedelta(seconds=1)
    assert stop_cause(policy, at(0), None, None, T0 + timedelta(seconds=1.9), minute=second) is None
    assert stop_cause(policy, at(0), None, None, T0 + timedelta(seconds=2), minute=second) is not None
