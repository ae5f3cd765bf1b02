"""The start queue's rules (core/queue.py) and its place in the state machine."""

import pytest

from dockyard.core.errors import Conflict, InvalidInput
from dockyard.core.queue import MAX_TIMEOUT_MINUTES, GpusTaken, Waiter, check_timeout, next_to_start, positions
from dockyard.core.states import HOLDS_GPUS, TRANSITIONAL, Status, can_transition, check_user_action


def w(id, count, seq, node="n1", model="A100"):
    return Waiter(id=id, node=node, model=model, count=count, seq=seq)


def drain(waiters, free):
    """Start waiters as next_to_start allows, taking their GPUs, until none fits."""
    started, waiting, free = [], list(waiters), dict(free)
    while (nxt := next_to_start(waiting, free)) is not None:
        waiting.remove(nxt)
        free[(nxt.node, nxt.model)] -= nxt.count
        started.append(nxt.id)
    return started


def test_first_come_first_served_on_one_node_and_model():
    line = [w("c", 1, 3), w("a", 1, 1), w("b", 1, 2)]
    assert drain(line, {("n1", "A100"): 2}) == ["a", "b"]


def test_a_head_that_does_not_fit_blocks_those_behind_it():
    # 3 free, the 4-GPU waiter first: the 1-GPU ones behind it do not take them.
    line = [w("big", 4, 1), w("small1", 1, 2), w("small2", 1, 3)]
    assert drain(line, {("n1", "A100"): 3}) == []
    assert drain(line, {("n1", "A100"): 4}) == ["big"]
    assert drain(line, {("n1", "A100"): 6}) == ["big", "small1", "small2"]


def test_a_four_gpu_waiter_is_not_starved_by_a_stream_of_one_gpu_requests():
    # GPUs come back one at a time while 1-GPU requests keep joining behind it.
    waiting, free, seq, started = [w("big", 4, 0)], {("n1", "A100"): 0}, 1, []
    for _ in range(10):
        waiting.append(w(f"s{seq}", 1, seq))
        seq += 1
        free[("n1", "A100")] += 1
        while (nxt := next_to_start(waiting, free)) is not None:
            waiting.remove(nxt)
            free[("n1", "A100")] -= nxt.count
            started.append(nxt.id)
    assert started[0] == "big"


def test_lines_are_per_node_and_model():
    line = [w("a", 4, 1, model="A100"), w("b", 1, 2, model="RTX-4090"), w("c", 1, 3, node="n2")]
    assert drain(line, {("n1", "A100"): 1, ("n1", "RTX-4090"): 1, ("n2", "A100"): 1}) == ["b", "c"]


def test_positions_count_within_each_line():
    line = [w("a", 1, 1), w("b", 2, 2, model="L4"), w("c", 1, 3), w("d", 1, 4, node="n2")]
    assert positions(line) == {"a": 1, "b": 1, "c": 2, "d": 1}


@pytest.mark.parametrize("minutes", [0, -5, MAX_TIMEOUT_MINUTES + 1])
def test_timeouts_outside_a_minute_to_a_week_are_refused_naming_the_field(minutes):
    with pytest.raises(InvalidInput) as caught:
        check_timeout(minutes)
    assert caught.value.field == "queue_timeout_minutes"


def test_timeouts_inside_are_accepted():
    for minutes in (None, 1, 120, MAX_TIMEOUT_MINUTES):
        check_timeout(minutes)


def test_the_refusal_names_the_free_count_and_the_ways_out():
    refusal = GpusTaken("n1", "A100", 4, 1, 2)
    assert GpusTaken("n1", "A100", 1, 0, 0, "create", "not enough free A100 GPUs").message.startswith(
        "not enough free A100 GPUs. Ways out: `dockyard create --gpus 0`")
    assert refusal.status_code == 409
    assert "only 1 A100 GPUs are free on node n1" in refusal.message
    assert "the instance needs 4, and 2 queued requests wait for them first. Ways out" in refusal.message
    assert "--no-gpu" in refusal.message and "--queue" in refusal.message and "--migrate" in refusal.message
    assert refusal.details == {"node": "n1", "gpu_model": "A100", "needed": 4, "free": 1, "waiting": 2,
                               "ways_out": ["no_gpu", "queue", "migrate"]}
    # A create already looks at every node: moving is no way out of it.
    assert GpusTaken("n1", "A100", 1, 0, 0, "create").details["ways_out"] == ["no_gpu", "queue"]


# ---- the state machine -------------------------------------------------------------------


def test_queued_holds_no_gpus_and_is_no_work_for_the_driver():
    assert Status.QUEUED not in HOLDS_GPUS
    assert Status.QUEUED not in TRANSITIONAL


def test_queued_leads_to_starting_creating_stopped_or_releasing_only():
    for target in Status:
        expected = target in (Status.STARTING, Status.CREATING, Status.STOPPED, Status.RELEASING)
        assert can_transition(Status.QUEUED, target) == expected, target


def test_only_a_stopped_or_failed_instance_may_join_the_queue():
    assert {s for s in Status if can_transition(s, Status.QUEUED)} == {Status.STOPPED, Status.FAILED}


def test_stop_cancels_a_queued_instance_at_once_and_start_is_refused():
    assert check_user_action(Status.QUEUED, "stop") == Status.STOPPED
    assert check_user_action(Status.QUEUED, "release") == Status.RELEASING
    with pytest.raises(Conflict, match="already queued"):
        check_user_action(Status.QUEUED, "start")
