"""Clone's failure paths on the in-memory runtime: the engine stops answering during the
copy, the copy itself fails, the source's container vanishes before its system disk is
committed, the clone's own start is refused. Each ends with the clone failed and its
reason in its events, the GPUs it was given back, and the source and its data as they were;
releasing the failed clone removes what it had half made."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from dockyard.core.errors import Conflict
from dockyard.core.states import Status
from dockyard.db.billing_models import Notice
from dockyard.db.models import Instance
from dockyard.runtimes.base import RuntimeError_
from dockyard.services import clone as clone_service
from dockyard.services import instances
from dockyard.services.held import system_disk
from dockyard.services.names import data_volume
from tests.unit import on_fake
from tests.unit.on_fake import ann, causes, create, gpus_held, row, settle, settle_idle, until

platform, driver, fake = on_fake.platform, on_fake.driver, on_fake.fake  # its fixtures


def running_source(platform, driver, fake) -> tuple[str, str]:
    """A running instance with a file on its data disk and one on its system disk."""
    source_id = create(platform, driver)
    source = settle_idle(platform, driver, source_id, Status.RUNNING)
    fake.volumes[data_volume(platform, source_id)].files["/data/model.bin"] = (b"weights", 0o644)
    fake.containers[source.container_id].files["/root/notes.txt"] = (b"notes", 0o644)
    return source_id, source.container_id


def clone(platform, driver, source_id: str):
    made, op = clone_service.clone_instance(platform, driver, ann(platform), source_id, "copy")
    until(lambda: op.done, "the clone's copy to end")
    return made.id, op


def assert_source_untouched(platform, fake, source_id: str, container_id: str) -> None:
    source = row(platform, source_id)
    assert source.status == Status.RUNNING and source.container_id == container_id
    assert fake.containers[container_id].status == "running"
    assert fake.containers[container_id].files["/root/notes.txt"] == (b"notes", 0o644)
    assert fake.volumes[data_volume(platform, source_id)].files == {"/data/model.bin": (b"weights", 0o644)}
    assert gpus_held(platform, source_id) == 1


def assert_failed_and_freed(platform, clone_id: str, reason: str):
    failed = settle(platform, clone_id, Status.FAILED, Status.RUNNING)
    assert failed.status == Status.FAILED and reason in failed.status_reason
    assert reason in causes(platform, clone_id)[-1]
    assert gpus_held(platform, clone_id) == 0
    return failed


def test_a_clone_copies_both_disks_and_runs(platform, driver, fake):
    source_id, container_id = running_source(platform, driver, fake)
    clone_id, op = clone(platform, driver, source_id)
    running = settle(platform, clone_id, Status.RUNNING, Status.FAILED)
    assert running.status == Status.RUNNING and op.error is None
    assert fake.volumes[data_volume(platform, clone_id)].files == {"/data/model.bin": (b"weights", 0o644)}
    assert fake.containers[running.container_id].files["/root/notes.txt"] == (b"notes", 0o644)
    assert_source_untouched(platform, fake, source_id, container_id)


def test_an_engine_that_stops_answering_during_the_copy_fails_the_clone(platform, driver, fake, monkeypatch):
    source_id, container_id = running_source(platform, driver, fake)

    def copy_then_go_down(*args, **kwargs):
        fake.down = True
        raise RuntimeError_(f"the engine of node {fake.node_name} does not answer")

    monkeypatch.setattr(fake, "copy_volume", copy_then_go_down)
    clone_id, op = clone(platform, driver, source_id)
    assert "does not answer" in op.error and op.error.startswith("copying the disks of")
    assert_failed_and_freed(platform, clone_id, "does not answer")
    with platform.sessions.begin() as db:
        notice = db.scalars(select(Notice).where(Notice.kind == "clone")).one()
        assert "failed" in notice.message and "does not answer" in notice.message
    fake.down = False
    assert_source_untouched(platform, fake, source_id, container_id)


def test_a_failed_data_copy_fails_the_clone_before_its_system_disk_is_made(platform, driver, fake):
    source_id, container_id = running_source(platform, driver, fake)
    fake.fail_copies = 1
    clone_id, op = clone(platform, driver, source_id)
    assert "copy" in op.error
    failed = assert_failed_and_freed(platform, clone_id, "told to fail")
    assert failed.container_id is None
    assert not [ref for ref in fake.images if system_disk(failed) and ref == system_disk(failed)]
    assert_source_untouched(platform, fake, source_id, container_id)


def test_a_source_whose_container_vanished_fails_the_clone_at_the_commit(platform, driver, fake, monkeypatch):
    source_id, container_id = running_source(platform, driver, fake)
    copy = fake.copy_volume

    def copy_then_vanish(*args, **kwargs):  # gone between the two copies
        copy(*args, **kwargs)
        fake.vanish(container_id)

    monkeypatch.setattr(fake, "copy_volume", copy_then_vanish)
    clone_id, _ = clone(platform, driver, source_id)
    failed = assert_failed_and_freed(platform, clone_id, "the container is gone")
    assert system_disk(failed) not in fake.images  # no system disk half made
    # The source's data disk is still there for the reconciler to judge the source by.
    assert data_volume(platform, source_id) in fake.volumes


def test_a_clone_whose_start_is_refused_fails_and_its_release_removes_its_copies(platform, driver, fake):
    source_id, container_id = running_source(platform, driver, fake)
    fake.fail_starts = 1
    clone_id, op = clone(platform, driver, source_id)
    assert op.error is None  # the copies were made; the start is what failed
    failed = assert_failed_and_freed(platform, clone_id, "told to fail")
    assert data_volume(platform, clone_id) in fake.volumes
    assert any(ref.startswith(system_disk(failed)) for ref in fake.images)
    assert_source_untouched(platform, fake, source_id, container_id)

    instances.request_release(platform, ann(platform), clone_id, delete_data=True)
    driver.kick(clone_id)
    settle(platform, clone_id, Status.RELEASED)
    assert data_volume(platform, clone_id) not in fake.volumes
    assert not [ref for ref in fake.images if ref.startswith(system_disk(failed))]
    assert not [c for c in fake.containers.values() if c.spec.labels.get("dockyard.instance") == clone_id]
    assert_source_untouched(platform, fake, source_id, container_id)


def test_a_clone_of_an_instance_being_released_is_refused_and_makes_nothing(platform, driver, fake):
    source_id, _ = running_source(platform, driver, fake)
    instances.request_release(platform, ann(platform), source_id)
    containers, volumes = set(fake.containers), set(fake.volumes)
    with pytest.raises(Conflict, match="no system disk to copy"):
        clone_service.clone_instance(platform, driver, ann(platform), source_id, "copy")
    assert gpus_held(platform) == 1 and set(fake.containers) == containers and set(fake.volumes) == volumes


def test_a_clone_its_node_has_no_gpus_for_is_refused_and_makes_nothing(platform, driver, fake):
    source_id, _ = running_source(platform, driver, fake)
    containers, volumes = set(fake.containers), set(fake.volumes)
    with platform.sessions.begin() as db:
        before = db.scalar(select(func.count()).select_from(Instance))
    with pytest.raises(Conflict):  # 3 of the node's 4 A100s are free
        clone_service.clone_instance(platform, driver, ann(platform), source_id, "copy", gpu_count=4)
    with platform.sessions.begin() as db:
        assert db.scalar(select(func.count()).select_from(Instance)) == before
    assert gpus_held(platform) == 1 and set(fake.containers) == containers and set(fake.volumes) == volumes
    assert platform.operations.listed(ann(platform)) == []
