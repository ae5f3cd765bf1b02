"""The instance state machine: allowed transitions and user actions."""

import pytest

from dockyard.core.errors import Conflict
from dockyard.core.states import ALLOWED, HOLDS_GPUS, TRANSITIONAL, Status, can_transition, check_user_action


def test_every_status_has_an_entry_and_targets_are_statuses():
    assert set(ALLOWED) == set(Status)
    for targets in ALLOWED.values():
        assert targets <= set(Status)


def test_no_status_transitions_to_itself():
    for status, targets in ALLOWED.items():
        assert status not in targets, status


def test_released_is_terminal():
    assert ALLOWED[Status.RELEASED] == frozenset()
    for status in Status:
        assert not can_transition(Status.RELEASED, status)


def test_releasing_leads_to_released_or_to_failed_past_its_deadline():
    assert ALLOWED[Status.RELEASING] == frozenset({Status.RELEASED, Status.FAILED})


def test_every_unreleased_status_can_be_released():
    for status in Status:
        if status in (Status.RELEASING, Status.RELEASED):
            continue
        assert can_transition(status, Status.RELEASING), status


def reachable(table, start) -> set:
    """`start` and every status a path of the transition `table` leads to from it."""
    seen, todo = {start}, [start]
    while todo:
        for nxt in table[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_every_status_is_reachable_from_creating_and_can_reach_released():
    assert reachable(ALLOWED, Status.CREATING) == set(Status)
    for status in Status:
        assert Status.RELEASED in reachable(ALLOWED, status), status


def test_transitional_statuses_have_a_way_out():
    assert TRANSITIONAL == {Status.CREATING, Status.STARTING, Status.STOPPING, Status.RELEASING}
    for status in TRANSITIONAL:
        assert ALLOWED[status], status


def test_holds_gpus():
    # A migrating instance holds the GPUs it will start with on its new node.
    assert HOLDS_GPUS == {Status.CREATING, Status.STARTING, Status.RUNNING, Status.STOPPING, Status.RELEASING,
                          Status.MIGRATING}
    for status in (Status.STOPPED, Status.FAILED, Status.RELEASED):
        assert status not in HOLDS_GPUS


@pytest.mark.parametrize(
    "current, target, allowed",
    [
        (Status.CREATING, Status.RUNNING, True),
        (Status.CREATING, Status.STOPPED, False),
        (Status.RUNNING, Status.STOPPING, True),
        (Status.RUNNING, Status.STARTING, False),
        (Status.STOPPED, Status.STARTING, True),
        (Status.STOPPED, Status.RUNNING, False),
        (Status.FAILED, Status.STARTING, True),
        (Status.FAILED, Status.RUNNING, False),
        (Status.STARTING, Status.STOPPED, True),
        (Status.RELEASING, Status.FAILED, True),
    ],
)
def test_can_transition_spot_checks(current, target, allowed):
    assert can_transition(current, target) is allowed


@pytest.mark.parametrize(
    "current, action, target",
    [
        (Status.RUNNING, "stop", Status.STOPPING),
        (Status.STOPPED, "start", Status.STARTING),
        (Status.FAILED, "start", Status.STARTING),
        (Status.RUNNING, "release", Status.RELEASING),
        (Status.STOPPED, "release", Status.RELEASING),
        (Status.CREATING, "release", Status.RELEASING),
        (Status.FAILED, "release", Status.RELEASING),
    ],
)
def test_user_action_allowed(current, action, target):
    assert check_user_action(current, action) == target


def test_releasing_twice_is_allowed():
    assert check_user_action(Status.RELEASING, "release") == Status.RELEASING


@pytest.mark.parametrize(
    "current, action",
    [
        (Status.STOPPED, "stop"),
        (Status.STOPPING, "stop"),
        (Status.CREATING, "stop"),
        (Status.RELEASED, "stop"),
        (Status.RUNNING, "start"),
        (Status.STARTING, "start"),
        (Status.RELEASING, "start"),
        (Status.RELEASED, "start"),
        (Status.RELEASED, "release"),
    ],
)
def test_user_action_refused_names_action_and_status(current, action):
    with pytest.raises(Conflict) as err:
        check_user_action(current, action)
    assert err.value.status_code == 409
    assert err.value.message == f"cannot {action} an instance that is {current.value}"


def test_user_action_result_is_always_an_allowed_transition_or_release_repeat():
    for status in Status:
        for action in ("stop", "start", "release"):
            try:
                target = check_user_action(status, action)
            except Conflict:
                continue
            assert can_transition(status, target) or (status == target == Status.RELEASING)


def test_a_lost_instance_can_only_be_released_or_come_back_stopped():
    assert ALLOWED[Status.LOST] == frozenset({Status.STOPPED, Status.RELEASING})
    assert Status.LOST not in HOLDS_GPUS and Status.LOST not in TRANSITIONAL
    assert check_user_action(Status.LOST, "release") == Status.RELEASING
    for action in ("start", "stop"):
        with pytest.raises(Conflict, match="its node does not answer"):
            check_user_action(Status.LOST, action)


def test_a_migration_starts_on_the_new_node_or_stays_stopped_and_users_cannot_act_on_it_meanwhile():
    assert ALLOWED[Status.MIGRATING] == {Status.STARTING, Status.STOPPED, Status.RELEASING}
    assert can_transition(Status.STOPPED, Status.MIGRATING) and can_transition(Status.FAILED, Status.MIGRATING)
    assert not can_transition(Status.RUNNING, Status.MIGRATING)
    for action in ("start", "stop"):
        with pytest.raises(Conflict, match="migrating"):
            check_user_action(Status.MIGRATING, action)
