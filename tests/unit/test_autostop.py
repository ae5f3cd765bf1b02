"""The auto-stop rules, the duration and time parsers, operator limits, GPU-idle series (pure)."""

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard.core.activity import is_running, running_names
from dockyard.core.autostop import (CLEAR, MAX_MINUTES, NO_GPU_READINGS, STOP, WARN, Activity, GpuIdle, Policy,
                                    advance_gpu_idle, capped, decide, describe, parse_minutes, parse_time,
                                    within_limits)
from dockyard.core.metrics import GpuSample, Sample
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


def stop_cause(policy, started, ssh, jupyter, now, minute=timedelta(minutes=1), warned=True):
    """The cause of a stop now, given a warning that stood since the start (or not)."""
    decision = decide(policy, Activity(started, ssh, jupyter, warned_at=started if warned else None), now, minute)
    return decision.cause if decision.action == STOP else None


def test_no_policy_never_stops():
    assert decide(Policy(), Activity(at(0)), at(10 * MAX_MINUTES)).action is None


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
    assert decide(Policy(idle_minutes=1, max_minutes=1), Activity(None), at(100)).action is None


def test_the_policy_minute_can_be_shortened():
    policy, second = Policy(idle_minutes=2), timedelta(seconds=1)
    assert stop_cause(policy, at(0), None, None, T0 + timedelta(seconds=1.9), minute=second) is None
    assert stop_cause(policy, at(0), None, None, T0 + timedelta(seconds=2), minute=second) is not None


def test_a_warning_comes_first_and_a_stop_only_after_it():
    policy = Policy(idle_minutes=30, warn_minutes=10)
    assert decide(policy, Activity(at(0)), at(19.9)).action is None
    warn = decide(policy, Activity(at(0)), at(20))
    assert (warn.action, warn.deadline) == (WARN, at(30))
    assert "no SSH or Jupyter activity for 30 min" in warn.cause
    assert decide(policy, Activity(at(0), warned_at=at(20)), at(29)).action is None  # warned, not yet due
    assert decide(policy, Activity(at(0), warned_at=at(20)), at(30)).action == STOP
    # Overdue but never warned (the loop was down): the warning first, never a stop unannounced.
    assert decide(policy, Activity(at(0)), at(500)).action == WARN


def test_activity_after_a_warning_withdraws_it():
    policy = Policy(idle_minutes=30, warn_minutes=10)
    assert decide(policy, Activity(at(0), last_ssh_at=at(25), warned_at=at(20)), at(30)).action == CLEAR


def test_keep_running_resets_the_timers_and_old_warnings_stand_for_nothing():
    policy = Policy(idle_minutes=30, max_minutes=60, warn_minutes=10)
    kept = Activity(at(0), kept_at=at(28), warned_at=at(20))
    assert decide(policy, kept, at(30)).action == CLEAR  # the warning is older than the keep
    assert decide(policy, Activity(at(0), kept_at=at(28)), at(47.9)).action is None
    assert decide(policy, Activity(at(0), kept_at=at(28)), at(48)).action == WARN  # 28 + 30 - 10
    # A warning from the previous run does not let a fresh start be stopped unwarned.
    assert decide(policy, Activity(at(100), warned_at=at(50)), at(130)).action == WARN


def test_a_stop_time_stops_without_a_warning():
    policy = Policy(stop_at=at(60))
    assert decide(policy, Activity(at(0)), at(59.9)).action is None
    stop = decide(policy, Activity(at(0)), at(60))
    assert stop.action == STOP and stop.cause == "auto-stop: the stop time 2026-11-26 09:00 UTC came"


def test_stop_times_are_parsed_with_their_zone_and_must_be_ahead():
    assert parse_time("2026-11-26T17:00+08:00", "at", at(0)) == at(60)
    for text, word in (("2026-11-26T15:59+08:00", "in the past"), ("2026-11-27T08:00", "no time zone"),
                       ("tomorrow", "not a time")):
        with pytest.raises(InvalidInput) as refused:
            parse_time(text, "auto_stop_at", at(0))
        assert word in refused.value.message and refused.value.field == "auto_stop_at"


def test_operator_limits_cap_and_replace_off():
    limits = {"auto_stop_idle_minutes": 120, "auto_stop_max_minutes": 1440, "auto_stop_gpu_idle_minutes": None}
    assert within_limits({"auto_stop_idle_minutes": None}, limits) == {"auto_stop_idle_minutes": 120}
    assert within_limits({"auto_stop_idle_minutes": 60, "auto_stop_gpu_idle_minutes": None}, limits) == {
        "auto_stop_idle_minutes": 60, "auto_stop_gpu_idle_minutes": None}
    with pytest.raises(InvalidInput) as refused:
        within_limits({"auto_stop_max_minutes": 1441}, limits)
    assert refused.value.message == ("auto_stop_max_minutes: 24 h 1 min is over the operator's limit for the "
                                     "maximum runtime, 24 h")
    assert [capped(None, 120), capped(600, 120), capped(60, 120), capped(None, None)] == [120, 120, 60, None]


# Recorded: NVML utilisation of one GPU every 15 s (a training job's last steps, then idle),
# and a two-GPU instance where one GPU stays busy.
TRAINING_THEN_IDLE = [97, 99, 98, 96, 100, 41, 3, 0, 0, 1, 0, 0, 0, 2, 0, 0]
TWO_GPUS = [(0, 88), (1, 91), (0, 90), (2, 87), (0, 93)]


def series(values, start=1000.0, step=15.0):
    return [Sample(at=start + i * step, cpu_percent=None, memory_used=0, memory_limit=0,
                   gpus=tuple(GpuSample(uuid=f"GPU-{n}", util_percent=u)
                              for n, u in enumerate(v if isinstance(v, tuple) else (v,))))
            for i, v in enumerate(values)]


def test_gpu_idle_counts_from_the_last_busy_sample():
    samples = series(TRAINING_THEN_IDLE)
    state = advance_gpu_idle(GpuIdle(), samples, 5)
    assert state.since == samples[5].at  # 41 %: the last sample at or over 5 %
    assert state.seen_until == samples[-1].at
    # Fed a few samples at a time, as the loop sees them: the same answer.
    step = GpuIdle()
    for n in range(1, len(samples) + 1):
        step = advance_gpu_idle(step, samples[:n], 5)
    assert step == state
    assert advance_gpu_idle(GpuIdle(), samples, 50).since == samples[4].at


def test_gpu_idle_needs_every_gpu_under_the_threshold():
    samples = series(TWO_GPUS)
    assert advance_gpu_idle(GpuIdle(), samples, 5).since == samples[-1].at
    assert advance_gpu_idle(GpuIdle(), series([(0, 0), (1, 2)]), 5).since == 1000.0


def test_simulated_gpus_give_no_readings_and_the_rule_cannot_fire():
    unread = series([None, None, None])
    state = advance_gpu_idle(GpuIdle(), unread, 5)
    assert state.since is None and state.seen_until == unread[-1].at
    policy = Policy(gpu_idle_minutes=1, warn_minutes=0)
    assert decide(policy, Activity(at(0), warned_at=at(0)), at(10_000)).action not in (STOP, WARN)
    assert NO_GPU_READINGS == "cannot fire: no GPU readings"


def test_gpu_idle_warns_then_stops_naming_the_rule():
    policy = Policy(gpu_idle_minutes=30, gpu_idle_percent=5, warn_minutes=10)
    idle_since = at(5)
    assert decide(policy, Activity(at(0), gpu_idle_since=idle_since), at(24.9)).action is None
    assert decide(policy, Activity(at(0), gpu_idle_since=idle_since), at(25)).action == WARN
    stop = decide(policy, Activity(at(0), warned_at=at(25), gpu_idle_since=idle_since), at(35))
    assert (stop.action, stop.cause) == (STOP, "auto-stop: every GPU under 5% for 30 min")


def test_process_listings():
    listing = ("sh\tsh\x01-c\x01python train.py\x01\npython\tpython\x01/root/train.py\x01--epochs\x013\x01\n"
               "sleep\tsleep\x01infinity\x01\ntrainer\t\n")
    names = running_names(listing)
    assert names == {"sh", "python", "train.py", "sleep", "infinity"}  # "trainer": a zombie, no arguments
    assert is_running(names, "train.py") and not is_running(names, "eval.py") and not is_running(names, "trainer")
    # A shell running a command names only itself: the words of its command are not processes.
    assert running_names("sh\tsh\x01-c\x01/tmp/trainer 3\x01\n") == {"sh"}
    assert is_running(running_names("a_very_long_pro\t/x/a_very_long_process_name\x01\n"), "a_very_long_process_name")
    assert is_running(running_names("a_very_long_pro\tx\x01-y\x01\n"), "a_very_long_process_name")


def test_jupyter_activity_from_its_kernels_and_terminals():
    from dockyard.core.activity import jupyter_active_at

    now = at(60)
    idle = {"id": "k1", "execution_state": "idle", "last_activity": "2026-11-26T08:30:00.123456Z"}
    busy = {"id": "k2", "execution_state": "busy", "last_activity": "2026-11-26T08:01:00Z"}
    terminal = {"name": "1", "last_activity": "2026-11-26T08:45:00+00:00"}
    assert jupyter_active_at([idle, busy], [], now) == now  # executing: active now, whoever watches
    assert jupyter_active_at([idle], [], now) == at(30).replace(microsecond=123456)
    assert jupyter_active_at([idle], [terminal], now) == at(45)
    assert jupyter_active_at([], [], now) is None
    ahead = {"execution_state": "idle", "last_activity": "2027-01-01T00:00:00Z"}
    assert jupyter_active_at([ahead, "junk", {"last_activity": "soon"}, {"last_activity": 5}], [], now) == now
