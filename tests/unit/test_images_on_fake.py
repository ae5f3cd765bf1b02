"""Images' failure paths on the in-memory runtime: saving an instance while its engine
does not answer, after its container vanished, or on a node not connected; building a
catalog image that fails, on one node of two. No image is left ready (or saving) without
its engine image, the reason reaches the instance's events and the operation, and the
instance goes on as it was."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from dockyard.config import NodeConfig
from dockyard.core.errors import Conflict
from dockyard.core.states import Status
from dockyard.db.billing_models import Notice
from dockyard.db.models import Image, NodeImage
from dockyard.runtimes.base import RuntimeError_
from dockyard.services import images as image_service
from dockyard.services import instance_actions
from tests.unit import on_fake
from tests.unit.on_fake import IMAGE, ann, open_fake, causes, create, gpus_held, row, settle_idle, until

platform, driver, fake = on_fake.platform, on_fake.driver, on_fake.fake  # its fixtures


def running(platform, driver) -> str:
    instance_id = create(platform, driver)
    settle_idle(platform, driver, instance_id, Status.RUNNING)
    return instance_id


def save(platform, driver, instance_id: str, name: str = "env:v1"):
    """Save, wait for the background commit; the image's row (None if it is gone) and the operation."""
    image = instance_actions.save(platform, driver, ann(platform), instance_id, name)
    op = next(op for op in platform.operations.listed(ann(platform)) if op.target == image.name)
    until(lambda: op.done, "the save to end")
    with platform.sessions.begin() as db:
        found = db.get(Image, image.id)
        if found is not None:
            db.expunge(found)
    return image, found, op


def saved_images(platform) -> list[Image]:
    with platform.sessions.begin() as db:
        return list(db.scalars(select(Image).where(Image.kind == "saved")))


def assert_instance_unharmed(platform, fake, instance_id: str) -> None:
    instance = row(platform, instance_id)
    assert instance.status == Status.RUNNING and fake.containers[instance.container_id].status == "running"
    assert gpus_held(platform, instance_id) == 1


def test_a_save_makes_a_ready_image_without_the_instances_secrets(platform, driver, fake):
    instance_id = running(platform, driver)
    image, found, op = save(platform, driver, instance_id)
    assert op.error is None and found.status == "ready"
    assert "/root/.ssh/authorized_keys" not in fake.images[image.ref].files
    with platform.sessions.begin() as db:
        assert image_service.nodes_holding(db, image.id) == ["local"]
    assert_instance_unharmed(platform, fake, instance_id)


def test_a_save_while_the_engine_does_not_answer_leaves_no_image(platform, driver, fake):
    instance_id = running(platform, driver)
    fake.down = True
    image, found, op = save(platform, driver, instance_id)
    assert found is None and saved_images(platform) == []
    assert "does not answer" in op.error
    assert f"saving image {image.name} failed" in causes(platform, instance_id)[-1]
    with platform.sessions.begin() as db:
        assert "failed" in db.scalars(select(Notice).where(Notice.kind == "save")).one().message
    fake.down = False
    assert_instance_unharmed(platform, fake, instance_id)
    assert image.ref not in fake.images


def test_a_save_of_a_vanished_container_leaves_no_image(platform, driver, fake):
    instance_id = running(platform, driver)
    fake.vanish(row(platform, instance_id).container_id)
    image, found, op = save(platform, driver, instance_id)
    assert found is None and saved_images(platform) == [] and image.ref not in fake.images
    assert "the container is gone" in op.error and "the container is gone" in causes(platform, instance_id)[-1]


def test_a_save_whose_image_cannot_be_read_back_removes_what_the_engine_made(platform, driver, fake, monkeypatch):
    instance_id = running(platform, driver)
    read = fake.image_info

    def unreadable(ref):
        if "-saved/" in ref:
            raise RuntimeError_("read timed out")
        return read(ref)

    monkeypatch.setattr(fake, "image_info", unreadable)
    image, found, op = save(platform, driver, instance_id)
    assert found is None and "read timed out" in op.error
    assert image.ref not in fake.images  # no engine image that no row accounts for
    assert_instance_unharmed(platform, fake, instance_id)


def test_a_save_on_a_node_not_connected_fails_rather_than_staying_saving(platform, driver, fake):
    instance_id = running(platform, driver)
    platform.runtimes.pop("local")  # as a node offline when the server started
    image, found, op = save(platform, driver, instance_id)
    assert found is None and saved_images(platform) == []
    assert "not connected" in op.error and "not connected" in causes(platform, instance_id)[-1]
    platform.runtimes["local"] = fake
    assert_instance_unharmed(platform, fake, instance_id)


# ---- builds --------------------------------------------------------------------------


@pytest.fixture
def two_nodes(tmp_path):
    """Two in-memory nodes on which no catalog image is built yet; ann is an admin."""
    made = open_fake(tmp_path, admin=True, nodes=[NodeConfig(name="b", runtime="fake")])
    for runtime in made.runtimes.values():
        runtime.images_on_demand = False
    image_service.refresh_cache(made)
    return made


def image_row(platform, name: str) -> Image:
    with platform.sessions.begin() as db:
        found = db.scalars(select(Image).where(Image.name == name)).one()
        db.expunge(found)
        return found


def node_rows(platform, name: str) -> list[str]:
    with platform.sessions.begin() as db:
        return list(db.scalars(select(NodeImage.node_name).join(Image, Image.id == NodeImage.image_id)
                               .where(Image.name == name)))


def test_a_failed_build_leaves_the_catalog_image_absent_with_the_reason(two_nodes):
    assert image_row(two_nodes, IMAGE).status == "absent"
    two_nodes.runtimes["local"].fail_builds = 1
    with pytest.raises(Conflict, match="build of .* on local failed"):
        image_service.prepare_image(two_nodes, IMAGE, "local", lambda line: None)
    image = image_row(two_nodes, IMAGE)
    assert image.status == "absent" and "told to fail" in image.status_reason
    assert node_rows(two_nodes, IMAGE) == []


def test_a_build_that_fails_on_one_node_keeps_the_image_ready_where_it_was_built(two_nodes):
    two_nodes.runtimes["local"].fail_builds = 1  # the second of the two, in name order
    with pytest.raises(Conflict, match="on local failed"):
        image_service.prepare_image(two_nodes, IMAGE, None, lambda line: None)
    assert image_row(two_nodes, IMAGE).status == "ready"
    assert node_rows(two_nodes, IMAGE) == ["b"]


def test_a_build_in_the_background_reports_its_failure_on_the_operation(two_nodes):
    two_nodes.runtimes["local"].fail_builds = 1
    from dockyard.background.workers import Workers

    owner = Workers(two_nodes, drain_s=5)
    try:
        lines = []
        op = image_service.start_prepare(two_nodes, ann(two_nodes), IMAGE, "local", lines.append)
        until(lambda: op.done, "the build to end")
        assert "told to fail" in op.error and lines[-1] is None
        assert image_row(two_nodes, IMAGE).status == "absent"
    finally:
        owner.stop()


def test_a_pull_that_fails_leaves_a_registered_image_as_it_was(two_nodes):
    admin = ann(two_nodes)
    for runtime in two_nodes.runtimes.values():
        runtime.add_image("registry.example/tools:1")
    image_service.add_image(two_nodes, "registry.example/tools:1", "tools", admin)
    two_nodes.runtimes["b"].remove_image("registry.example/tools:1")
    with pytest.raises(Conflict, match="pull of tools on b failed"):
        image_service.prepare_image(two_nodes, "tools", "b", lambda line: None)
    assert image_row(two_nodes, "tools").status == "ready"
    assert sorted(node_rows(two_nodes, "tools")) == ["b", "local"]  # b's row goes with the next cache refresh


def test_a_name_already_taken_is_refused_and_the_first_image_stays(platform, driver, fake):
    admin = ann(platform)
    fake.add_image("registry.example/tools:1")
    fake.add_image("registry.example/tools:2")
    first = image_service.add_image(platform, "registry.example/tools:1", "tools", admin)
    with pytest.raises(Conflict, match="image name 'tools' is already taken"):
        image_service.add_image(platform, "registry.example/tools:2", "tools", admin)
    assert image_row(platform, "tools").ref == first.ref == "registry.example/tools:1"

    instance_id = running(platform, driver)
    image, _, _ = save(platform, driver, instance_id)
    with pytest.raises(Conflict, match="you already have an image named 'ann/env:v1'"):
        instance_actions.save(platform, driver, admin, instance_id, "env:v1")
    assert [i.id for i in saved_images(platform)] == [image.id]
