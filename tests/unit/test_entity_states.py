"""The state machines of images, clusters and volumes (core/states.py) and their one
writer (services/statuses.py): every change outside a table is refused, naming the
entity and both statuses; the paths the services take are in them (the tests of
images, clusters and volumes on the fake runtime walk those)."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from dockyard.core.errors import Conflict
from dockyard.core.states import (
    CLUSTER_TRANSITIONS, IMAGE_TRANSITIONS, VOLUME_TRANSITIONS, ClusterStatus, IllegalTransition, ImageStatus,
    Status, VolumeStatus, check_transition,
)
from dockyard.db.models import Image, Volume
from dockyard.runtimes.base import Feature
from dockyard.services import images as image_service
from dockyard.services import instances, statuses
from dockyard.services import volumes as volume_service
from tests.unit import on_fake
from tests.unit.on_fake import IMAGE, ann, create, settle_idle
from tests.unit.test_states import reachable

platform, driver = on_fake.platform, on_fake.driver  # its fixtures

TABLES = [("image", IMAGE_TRANSITIONS, ImageStatus), ("cluster", CLUSTER_TRANSITIONS, ClusterStatus),
          ("volume", VOLUME_TRANSITIONS, VolumeStatus)]


@pytest.mark.parametrize("what, table, enum", TABLES)
def test_every_status_has_an_entry_and_targets_are_its_statuses(what, table, enum):
    assert set(table) == set(enum) | {None}
    for old, targets in table.items():
        assert targets <= set(enum) and old not in targets, (what, old)


@pytest.mark.parametrize("what, table, enum", TABLES)
def test_every_change_outside_the_table_is_refused_naming_entity_and_statuses(what, table, enum):
    refused = 0
    for old in [None, *enum]:
        for new in enum:
            if new in table[old] or new == old:
                check_transition(table, f"{what} x", old, new)
                continue
            with pytest.raises(IllegalTransition) as caught:
                check_transition(table, f"{what} x", old, new)
            assert str(caught.value) == f"{what} x: illegal status change {'(new)' if old is None else old} -> {new}"
            refused += 1
    assert refused > 0


@pytest.mark.parametrize("what, table, enum", TABLES)
def test_every_status_is_reached_and_can_end(what, table, enum):
    assert reachable(table, None) - {None} == set(enum)
    end = {ImageStatus: ImageStatus.DELETED, ClusterStatus: ClusterStatus.RELEASED, VolumeStatus: VolumeStatus.DELETED}
    assert table[end[enum]] == frozenset()
    for status in enum:
        assert status == end[enum] or end[enum] in reachable(table, status), (what, status)


def test_the_paths_the_services_take_are_in_the_tables():
    """Each change the services make, by name, so that a table losing one fails here
    as well as in the tests that walk it."""
    paths = [
        (IMAGE_TRANSITIONS, [(None, ImageStatus.ABSENT), (None, ImageStatus.READY), (None, ImageStatus.SAVING),
                             (ImageStatus.ABSENT, ImageStatus.BUILDING), (ImageStatus.ABSENT, ImageStatus.READY),
                             (ImageStatus.BUILDING, ImageStatus.READY), (ImageStatus.BUILDING, ImageStatus.ABSENT),
                             (ImageStatus.SAVING, ImageStatus.READY), (ImageStatus.READY, ImageStatus.DELETED)]),
        (CLUSTER_TRANSITIONS, [(None, ClusterStatus.LIVE), (ClusterStatus.LIVE, ClusterStatus.RELEASING),
                               (ClusterStatus.RELEASING, ClusterStatus.RELEASED)]),
        (VOLUME_TRANSITIONS, [(None, VolumeStatus.READY), (VolumeStatus.READY, VolumeStatus.RESIZING),
                              (VolumeStatus.READY, VolumeStatus.DELETING), (VolumeStatus.READY, VolumeStatus.DELETED),
                              (VolumeStatus.RESIZING, VolumeStatus.READY),
                              (VolumeStatus.DELETING, VolumeStatus.DELETED)]),
    ]
    for table, changes in paths:
        for old, new in changes:
            assert new in table[old], (old, new)


def test_set_status_refuses_an_illegal_change_and_leaves_the_row(platform):
    with platform.sessions.begin() as db:
        image = db.scalars(select(Image).where(Image.status == ImageStatus.READY)).first()
        with pytest.raises(IllegalTransition, match=f"image {image.name}: illegal status change ready -> building"):
            statuses.set_status(image, ImageStatus.BUILDING)
        assert image.status == ImageStatus.READY
        statuses.set_status(image, ImageStatus.READY)  # the status it has: nothing changes


def test_a_new_row_gets_only_a_first_status():
    volume = Volume(id="v1", owner_id=1, name="scratch", node_name="local", size_gb=1, engine_name="e")
    with pytest.raises(IllegalTransition, match=r"volume scratch: illegal status change \(new\) -> deleting"):
        statuses.set_status(volume, VolumeStatus.DELETING)
    statuses.set_status(volume, VolumeStatus.READY)
    assert volume.status == VolumeStatus.READY


def test_change_moves_only_rows_still_in_the_expected_status(platform):
    made = volume_service.create_volume(platform, ann(platform), "scratch", 1)
    with platform.sessions.begin() as db:
        with pytest.raises(IllegalTransition, match="volume: illegal status change resizing -> deleting"):
            statuses.change(db, Volume, VolumeStatus.RESIZING, VolumeStatus.DELETING, Volume.id == made.id)
        assert statuses.change(db, Volume, VolumeStatus.DELETING, VolumeStatus.DELETED, Volume.id == made.id) == 0
        assert statuses.change(db, Volume, VolumeStatus.READY, VolumeStatus.DELETING, Volume.id == made.id) == 1
    with platform.sessions.begin() as db:
        assert db.get(Volume, made.id).status == VolumeStatus.DELETING


def _volume(platform, volume_id: str) -> Volume:
    with platform.sessions.begin() as db:
        found = db.get(Volume, volume_id)
        db.expunge(found)
        return found


def test_a_volume_walks_its_table_on_the_fake_runtime(platform):
    """Every change the volume service makes, on the in-memory engine: made, resized
    (and refused), removed (and finished after the engine answers again), and one the
    engine could not make."""
    fake, user = platform.runtimes["local"], ann(platform)
    del fake.missing[Feature.SIZED_DISKS]  # a node that can resize
    made = volume_service.create_volume(platform, user, "scratch", 1)
    assert made.status == VolumeStatus.READY
    assert volume_service.resize_volume(platform, user, "scratch", 2).size_gb == 2
    fake.volumes[made.engine_name].size_gb = None  # the engine refuses the next resize
    with pytest.raises(Conflict, match="could not be resized"):
        volume_service.resize_volume(platform, user, "scratch", 3)
    assert (_volume(platform, made.id).status, _volume(platform, made.id).size_gb) == (VolumeStatus.READY, 2)

    fake.down = True
    with pytest.raises(Conflict, match="will be retried"):
        volume_service.remove_volume(platform, user, "scratch")
    assert _volume(platform, made.id).status == VolumeStatus.DELETING
    with pytest.raises(Conflict, match="could not be made"):
        volume_service.create_volume(platform, user, "other", 1)
    fake.down = False
    volume_service.finish_removal(platform, made.id)  # what the reconciler does
    volume_service.finish_removal(platform, made.id)  # twice is harmless
    assert _volume(platform, made.id).status == VolumeStatus.DELETED
    with platform.sessions.begin() as db:
        other = db.scalars(select(Volume).where(Volume.name == "other")).one()
        assert other.status == VolumeStatus.DELETED and "does not answer" in other.status_reason


def _image(platform, name: str) -> Image | None:
    with platform.sessions.begin() as db:
        found = db.scalars(select(Image).where(Image.name.startswith(name))).first()
        if found is not None:
            db.expunge(found)
        return found


def test_images_walk_their_table_on_the_fake_runtime(platform, driver):
    """A crash's leftovers healed (a build back to absent, then found ready on the node;
    a save found ready, or dropped), and a delete that keeps the row of a used image."""
    fake, user = platform.runtimes["local"], ann(platform)
    fake.images_on_demand = False  # an image the node lacks is not made when asked for
    instance_id = create(platform, driver)
    instance = settle_idle(platform, driver, instance_id, Status.RUNNING)
    with platform.sessions.begin() as db:  # as a crash mid-build leaves it
        db.execute(update(Image).where(Image.name == IMAGE).values(status=ImageStatus.BUILDING))
    kept = image_service.save_instance(platform, user, instance, "kept:v1")
    image_service.save_instance(platform, user, instance, "lost:v1")  # its commit never ran
    repository, tag = kept.ref.rsplit(":", 1)
    fake.save_image(instance.container_id, repository, tag, labels={})
    image_service.heal_interrupted(platform)
    assert _image(platform, IMAGE).status == ImageStatus.ABSENT
    assert _image(platform, "ann/kept:v1").status == ImageStatus.READY and _image(platform, "ann/lost:v1") is None
    image_service.refresh_cache(platform)
    assert _image(platform, IMAGE).status == ImageStatus.READY

    used = instances.create_instance(platform, user, instances.CreateRequest(image="kept:v1", gpu_model="A100-80GB",
                                                                              gpu_count=1))
    driver.kick(used.id)
    settle_idle(platform, driver, used.id, Status.RUNNING)
    instances.request_release(platform, user, used.id)
    driver.kick(used.id)
    settle_idle(platform, driver, used.id, Status.RELEASED)
    image_service.delete_image(platform, user, "kept:v1")
    assert _image(platform, "ann/kept:v1#deleted").status == ImageStatus.DELETED
