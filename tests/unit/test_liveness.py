"""Nodes that vanish and return: after the grace period the node is offline and its
running instances lost, dated when it was last seen (where billing stops); when it
answers again they come back stopped, and the node is online once reconciled."""

from datetime import timedelta

from sqlalchemy import select

from dockyard.db.billing_models import Notice, UsageSegment
from dockyard.db.models import GpuAssignment, Instance, InstanceEvent, Node, utcnow
from dockyard.services import liveness
from dockyard.services.billing import settlement
from tests.unit.billing_fixtures import add_instance, event, hold_gpu, make_platform


class Engine:
    def __init__(self):
        self.answers = True

    def alive(self) -> bool:
        return self.answers


def setup(last_seen_s_ago: float, status: str = "running"):
    platform = make_platform(node_grace_s=60)
    engine = Engine()
    platform.runtimes["local"] = engine
    instance_id = add_instance(platform, "alice", created_at=utcnow() - timedelta(minutes=10))
    event(platform, instance_id, utcnow() - timedelta(minutes=5), status)
    with platform.sessions.begin() as db:
        hold_gpu(db, instance_id)
        db.get(Node, "local").last_seen_at = utcnow() - timedelta(seconds=last_seen_s_ago)
    return platform, engine, instance_id


def look(platform, instance_id):
    with platform.sessions.begin() as db:
        node = db.get(Node, "local")
        last = db.scalars(select(InstanceEvent).where(InstanceEvent.instance_id == instance_id)
                          .order_by(InstanceEvent.id.desc())).first()
        held = db.scalars(select(GpuAssignment).where(GpuAssignment.instance_id == instance_id)).all()
        return db.get(Instance, instance_id).status, node.online, last, len(held), node.last_seen_at


def check(platform, reconciled=None):
    liveness.check(platform, (reconciled if reconciled is not None else []).append)


def test_within_the_grace_period_nothing_changes():
    platform, engine, key = setup(last_seen_s_ago=30)
    engine.answers = False
    check(platform)
    status, online, _, held, _ = look(platform, key)
    assert (status, online, held) == ("running", True, 1)


def test_past_the_grace_period_the_node_is_offline_and_its_instances_lost_when_last_seen():
    platform, engine, key = setup(last_seen_s_ago=120)
    engine.answers = False
    seen = look(platform, key)[4]
    check(platform)
    status, online, last, held, _ = look(platform, key)
    assert (status, online, held) == ("lost", False, 0)
    assert last.at == seen and "stopped answering" in last.cause
    with platform.sessions.begin() as db:
        assert "stopped answering" in db.scalars(select(Notice.message)).one()


def test_a_stopped_instance_on_a_vanished_node_stays_stopped():
    platform, engine, key = setup(last_seen_s_ago=120, status="stopped")
    engine.answers = False
    check(platform)
    assert look(platform, key)[:2] == ("stopped", False)


def test_a_node_never_connected_counts_as_not_answering():
    platform, _, key = setup(last_seen_s_ago=120)
    del platform.runtimes["local"]
    check(platform)
    assert look(platform, key)[0] == "lost"


def test_when_the_node_answers_again_its_lost_instances_are_stopped_then_it_is_online():
    platform, engine, key = setup(last_seen_s_ago=120)
    engine.answers = False
    check(platform)
    engine.answers = True
    seen_by_reconcile = []

    def reconcile(node):
        seen_by_reconcile.append((node, look(platform, key)[:2]))

    liveness.check(platform, reconcile)
    # Reconciled while stopped and still offline; online only after that.
    assert seen_by_reconcile == [("local", ("stopped", False))]
    status, online, last, _, _ = look(platform, key)
    assert (status, online) == ("stopped", True) and "answers again" in last.cause


def test_a_returned_node_whose_reconcile_fails_stays_offline():
    platform, engine, key = setup(last_seen_s_ago=120)
    engine.answers = False
    check(platform)
    engine.answers = True

    def reconcile(node):
        raise RuntimeError("engine refused")

    liveness.check(platform, reconcile)
    assert look(platform, key)[:2] == ("stopped", False)


def test_billing_of_a_lost_instance_stops_when_its_node_was_last_seen():
    platform, engine, key = setup(last_seen_s_ago=120)
    started = look(platform, key)[2].at
    settlement.settle(platform, now=utcnow())  # the open run: charged no further than last seen
    seen = look(platform, key)[4]
    with platform.sessions.begin() as db:
        assert db.scalars(select(UsageSegment)).one().settled_until <= seen
    engine.answers = False
    check(platform)
    settlement.settle(platform, now=utcnow())
    with platform.sessions.begin() as db:
        segment = db.scalars(select(UsageSegment)).one()
        assert (segment.started_at, segment.ended_at) == (started, seen)


def test_an_instance_that_started_after_the_last_answer_is_lost_when_it_started():
    platform, engine, key = setup(last_seen_s_ago=120)
    with platform.sessions.begin() as db:
        db.get(Instance, key).updated_at = started = utcnow() - timedelta(seconds=90)
    engine.answers = False
    check(platform)
    assert look(platform, key)[2].at == started
