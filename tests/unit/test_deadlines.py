"""Transitional statuses have deadlines: overrun ones move on with a reason, their GPUs
returned and their owner told; a stop kills its container first, and is kept when the
engine cannot be reached."""

from datetime import timedelta

from sqlalchemy import select

from dockyard.db.billing_models import Notice
from dockyard.db.models import GpuAssignment, Instance, InstanceEvent, utcnow
from dockyard.runtimes.base import RuntimeError_
from dockyard.runtimes.instances import Held
from dockyard.services import deadlines
from tests.unit.billing_fixtures import add_instance, hold_gpu, make_platform


class StopRecorder:
    def __init__(self, fails: bool = False):
        self.stopped, self.fails = [], fails

    def stop(self, container_id: str, timeout: int) -> None:
        if self.fails:
            raise RuntimeError_("engine did not answer")
        self.stopped.append((container_id, timeout))


def stuck(platform, status: str, for_s: float, container_id: str | None = None) -> str:
    instance_id = add_instance(platform, "alice")
    with platform.sessions.begin() as db:
        row = db.get(Instance, instance_id)
        row.status, row.backend_state = status, Held(container_id).state()
        row.updated_at = utcnow() - timedelta(seconds=for_s)

        hold_gpu(db, instance_id)
    return instance_id


def state(platform, instance_id):
    with platform.sessions.begin() as db:
        row = db.get(Instance, instance_id)
        held = db.scalars(select(GpuAssignment).where(GpuAssignment.instance_id == instance_id)).all()
        cause = db.scalars(select(InstanceEvent.cause).where(InstanceEvent.instance_id == instance_id)
                           .order_by(InstanceEvent.id.desc())).first()
        notices = db.scalars(select(Notice.message)).all()
        return row.status, len(held), cause, notices


def test_each_overrun_status_moves_on_with_its_gpus_returned_and_the_owner_told():
    platform = make_platform(creating_timeout_s=60, starting_timeout_s=60, releasing_timeout_s=60)
    long_ago = utcnow() - timedelta(hours=1)
    ids = {status: stuck(platform, status, 120) for status in ("creating", "starting", "releasing")}
    deadlines.enforce(platform, long_ago)
    assert state(platform, ids["creating"])[:2] == ("failed", 0)
    assert state(platform, ids["starting"])[:2] == ("stopped", 0)
    status, held, cause, notices = state(platform, ids["releasing"])
    assert (status, held) == ("failed", 0) and "release it again" in cause and "60 s deadline" in cause
    assert len(notices) == 3


def test_within_its_deadline_nothing_moves():
    platform = make_platform(creating_timeout_s=600)
    instance_id = stuck(platform, "creating", 120)
    deadlines.enforce(platform, utcnow() - timedelta(hours=1))
    assert state(platform, instance_id)[:2] == ("creating", 1)


def test_time_the_server_was_down_does_not_count():
    platform = make_platform(creating_timeout_s=60)
    instance_id = stuck(platform, "creating", 3600)
    deadlines.enforce(platform, utcnow() - timedelta(seconds=5))  # restarted 5 s ago
    assert state(platform, instance_id)[0] == "creating"


def test_an_overrun_stop_kills_its_container_first():
    platform = make_platform(stopping_timeout_s=60)
    engine = StopRecorder()
    platform.runtimes["local"] = engine
    instance_id = stuck(platform, "stopping", 120, container_id="c1")
    deadlines.enforce(platform, utcnow() - timedelta(hours=1))
    assert engine.stopped == [("c1", 0)]
    assert state(platform, instance_id)[:2] == ("stopped", 0)


def test_an_overrun_stop_whose_engine_is_unreachable_keeps_its_gpus():
    platform = make_platform(stopping_timeout_s=60)
    platform.runtimes["local"] = StopRecorder(fails=True)
    instance_id = stuck(platform, "stopping", 120, container_id="c1")
    deadlines.enforce(platform, utcnow() - timedelta(hours=1))
    assert state(platform, instance_id)[:2] == ("stopping", 1)


def test_an_overrun_migration_leaves_the_instance_stopped_where_it_is():
    # The copies on the other node are the migration sweep's to remove (services/migration.py).
    platform = make_platform(migrating_timeout_s=60)
    instance_id = stuck(platform, "migrating", 120)
    with platform.sessions.begin() as db:
        db.get(Instance, instance_id).migrate_peer = "elsewhere"
    deadlines.enforce(platform, utcnow() - timedelta(hours=1))
    status, held, cause, notices = state(platform, instance_id)
    assert (status, held) == ("stopped", 0) and "did not finish migrating" in cause and len(notices) == 1
