"""Auto-release on a real database with a clock of the test's own: notices 3 days and 1
day before, once per stop; the release on day N; a start in between begins again. And
volumes charged per GB per day through the storage settlement."""

from __future__ import annotations

import os
from datetime import timedelta

from sqlalchemy import select

from dockyard.db.billing_models import Notice, Posting, PriceEntry
from dockyard.db.models import Instance, Volume
from dockyard.services import autorelease
from dockyard.services.billing import settlement
from tests.unit.billing_fixtures import T0, add_instance, event, make_platform

DAY = timedelta(days=1)


def _platform(**settings):
    url = None
    if os.environ.get("DOCKYARD_TEST_DB", "sqlite") != "sqlite":
        from pathlib import Path

        from tests.harness import test_database_url
        url = test_database_url(Path("/tmp"))
    return make_platform(url, **settings)


def _notices(platform) -> list[str]:
    with platform.sessions.begin() as db:
        return [n.message for n in db.scalars(select(Notice).where(Notice.kind == "release").order_by(Notice.id))]


def _status(platform, instance_id: str) -> str:
    with platform.sessions.begin() as db:
        return db.get(Instance, instance_id).status


def _stopped_instance(platform, at, **fields) -> str:
    instance_id = add_instance(platform, "alice")
    event(platform, instance_id, at - DAY, "running")
    event(platform, instance_id, at, "stopped")
    if fields:
        with platform.sessions.begin() as db:
            for key, value in fields.items():
                setattr(db.get(Instance, instance_id), key, value)
    return instance_id


def test_notices_on_days_12_and_14_then_the_release_on_day_15():
    platform = _platform(auto_release_days=15)
    stop = T0 + DAY
    instance_id = _stopped_instance(platform, stop)
    for days, notices, status in ((0, 0, "stopped"), (11.99, 0, "stopped"), (12, 1, "stopped"),
                                  (12.5, 1, "stopped"), (13.99, 1, "stopped"), (14, 2, "stopped"),
                                  (14.99, 2, "stopped"), (15, 3, "releasing"), (16, 3, "releasing")):
        released = autorelease.run_pass(platform, stop + days * DAY)
        assert len(_notices(platform)) == notices, days
        assert _status(platform, instance_id) == status, days
        assert released == ([instance_id] if days == 15 else [])
    messages = _notices(platform)
    assert "released in 3.0 days" in messages[0] and "kept as a volume" in messages[0]
    assert "released in 1.0 days" in messages[1]
    assert "released after 15 days stopped" in messages[2] and "data disk is kept as a volume" in messages[2]


def test_a_start_begins_again_and_fewer_days_are_the_users_choice():
    platform = _platform(auto_release_days=15)
    stop = T0 + DAY
    restarted = _stopped_instance(platform, stop)
    quick = _stopped_instance(platform, stop, auto_release_days=5, keep_data_on_release=False)
    greedy = _stopped_instance(platform, stop, auto_release_days=90)  # more than allowed: the operator's 15
    autorelease.run_pass(platform, stop + 12 * DAY)  # restarted: 3-day notice; quick: due already
    assert _status(platform, quick) == "releasing"
    assert any("data disk is deleted" in m for m in _notices(platform))
    event(platform, restarted, stop + 12.5 * DAY, "running")
    second_stop = stop + 13 * DAY
    event(platform, restarted, second_stop, "stopped")
    assert autorelease.run_pass(platform, stop + 15 * DAY) == [greedy]
    before = len(_notices(platform))
    assert autorelease.run_pass(platform, second_stop + 11 * DAY) == []
    assert len(_notices(platform)) == before  # the new stop counts from its own day
    autorelease.run_pass(platform, second_stop + 12 * DAY)
    assert len(_notices(platform)) == before + 1
    assert _status(platform, restarted) == "stopped"


def test_a_volume_is_charged_for_every_gb_per_day_until_deleted():
    platform = _platform(storage_period_s=86400, free_data_disk_gb=50)
    with platform.sessions.begin() as db:
        db.add(PriceEntry(kind="disk", model="", node="", price=3, effective_from=T0, created_by="t"))
    instance_id = add_instance(platform, "alice", data_disk_gb=10)  # within the free 50 GB: not charged
    with platform.sessions.begin() as db:
        owner = db.get(Instance, instance_id).owner_id
        db.add(Volume(id="v1", owner_id=owner, name="kept", node_name="local", size_gb=10, engine_name="e1",
                      created_at=T0, status="ready"))
    settlement.settle(platform, now=T0 + 2 * DAY + timedelta(hours=1))
    with platform.sessions.begin() as db:
        volume_charges = db.scalars(select(Posting.amount).where(Posting.key.like("volume-storage:v1:%"))).all()
        # Periods are UTC days: the half day from T0 (12:00) and the next whole day, 10 GB at 3.
        assert sorted(volume_charges) == [15, 30]
        assert not db.scalars(select(Posting).where(Posting.key.like(f"storage:{instance_id}:%"))).all()
        row = db.get(Volume, "v1")
        row.status, row.deleted_at = "deleted", T0 + 2.5 * DAY
    settlement.settle(platform, now=T0 + 4 * DAY)
    with platform.sessions.begin() as db:
        total = sum(db.scalars(select(Posting.amount).where(Posting.key.like("volume-storage:v1:%"))))
    assert total == 75  # 2.5 days, and nothing after its deletion
