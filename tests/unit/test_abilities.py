"""Optional abilities (runtimes/base.Feature) a node's backend may lack, on two in-memory
nodes: a request that needs one is refused with the backend's reason before any row,
GPU assignment, event or audit entry is written, and placement skips a node that lacks
it when another has it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from dockyard.config import NodeConfig, Settings
from dockyard.core.errors import Conflict
from dockyard.db.models import (AuditEntry, Cluster, GpuAssignment, Image, Instance, InstanceEvent, NodeImage, User)
from dockyard.runtimes.base import Feature
from dockyard.services import clusters, clone, images, instances, users
from dockyard.services.platform import open_platform
from tests.unit.test_driver_on_fake import IMAGE, ann, row, settle



def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path, runtime="fake", billing_enabled=False, stop_timeout_s=1,
                    nodes=[NodeConfig(name="b", runtime="fake")])


@pytest.fixture
def platform(tmp_path):
    from dockyard.services import images as image_service
    from dockyard.services.nodes import connect_nodes

    made = open_platform(settings(tmp_path))
    image_service.load_catalog(made)
    connect_nodes(made)
    image_service.refresh_cache(made)
    with made.sessions.begin() as db:
        users.create_user(db, "ann", "correct-horse")
        users.create_user(db, "root", "correct-horse", is_admin=True)
    assert sorted(made.runtimes) == ["b", "local"]
    return made


@pytest.fixture
def driver(platform):
    from dockyard.background.workers import Workers

    owner = Workers(platform, drain_s=5)  # its pools; its loops are not started
    yield owner.driver
    owner.stop()


def take(platform, node: str, feature: Feature) -> str:
    why = f"node {node} had it taken away by the test"  # the refusal must carry it
    platform.runtimes[node].missing[feature] = why
    return why


def counts(platform) -> dict[str, int]:
    with platform.sessions.begin() as db:
        return {t.__name__: db.scalar(select(func.count()).select_from(t))
                for t in (Instance, InstanceEvent, GpuAssignment, Image, NodeImage, Cluster, AuditEntry)}


def refused(platform, feature: Feature, why: str, call) -> Conflict:
    before = counts(platform)
    with pytest.raises(Conflict) as err:
        call()
    assert why in err.value.message and f"(no {feature})" in err.value.message, err.value.message
    assert counts(platform) == before
    return err.value


def create(platform, gpus: int = 1, **fields) -> Instance:
    return instances.create_instance(platform, ann(platform), instances.CreateRequest(
        image=IMAGE, gpu_model="A100-80GB", gpu_count=gpus, **fields))


def running(platform, driver) -> Instance:
    made = create(platform)
    driver.kick(made.id)
    return settle(platform, made.id, "running")


def admin(platform) -> User:
    with platform.sessions.begin() as db:
        user = db.scalars(select(User).where(User.name == "root")).one()
        db.expunge(user)
        return user


# ---- placement: a lacking node is skipped, or the request refused with its reason ---------


@pytest.mark.parametrize("lacking,other", [("local", "b"), ("b", "local")])
def test_gpus_go_to_a_node_that_pins_them(platform, lacking, other):
    take(platform, lacking, Feature.GPU_PINNING)
    assert {create(platform).node_name for _ in range(3)} == {other}
    assert create(platform, gpus=0).node_name in ("local", "b")  # no GPUs: pinning not needed


def test_gpus_are_refused_where_no_node_pins_them(platform):
    why = take(platform, "local", Feature.GPU_PINNING)
    take(platform, "b", Feature.GPU_PINNING)
    refused(platform, Feature.GPU_PINNING, why, lambda: create(platform))


def test_without_host_ssh_ports_an_instance_has_no_ssh_port_and_a_password_goes_elsewhere(platform):
    why = take(platform, "local", Feature.HOST_SSH_PORTS)
    plain = create(platform, gpus=0)
    assert plain.ssh_port is None or plain.node_name == "b"
    pinned = [create(platform, gpus=1) for _ in range(4)]  # some land on local: no port there
    assert all((i.ssh_port is None) == (i.node_name == "local") for i in pinned)
    assert {create(platform, ssh_password=True).node_name for _ in range(3)} == {"b"}
    take(platform, "b", Feature.HOST_SSH_PORTS)
    refused(platform, Feature.HOST_SSH_PORTS, why, lambda: create(platform, ssh_password=True))


def test_a_cluster_goes_where_cluster_networks_are(platform):
    take(platform, "b", Feature.CLUSTER_NETWORKS)  # where the members go otherwise
    request = clusters.ClusterRequest(name="pair", image=IMAGE, nodes=2, gpus=1, gpu_model="A100-80GB")
    _, ids = clusters.create_cluster(platform, ann(platform), request)
    assert {row(platform, i).node_name for i in ids} == {"local"}


def test_a_cluster_is_refused_where_no_node_has_cluster_networks(platform):
    take(platform, "b", Feature.CLUSTER_NETWORKS)
    why = take(platform, "local", Feature.CLUSTER_NETWORKS)
    request = clusters.ClusterRequest(name="pair", image=IMAGE, nodes=2, gpus=1, gpu_model="A100-80GB")
    refused(platform, Feature.CLUSTER_NETWORKS, why, lambda: clusters.create_cluster(platform, ann(platform), request))


def test_cluster_members_with_gpus_go_where_they_are_pinned(platform):
    take(platform, "b", Feature.GPU_PINNING)
    request = clusters.ClusterRequest(name="pair", image=IMAGE, nodes=2, gpus=1, gpu_model="A100-80GB")
    _, ids = clusters.create_cluster(platform, ann(platform), request)
    assert {row(platform, i).node_name for i in ids} == {"local"}


# ---- an instance's own node: refused with the reason -----------------------------------


def test_a_start_with_gpus_is_refused_where_they_cannot_be_pinned(platform, driver):
    made = running(platform, driver)
    instances.request_stop(platform, ann(platform), made.id)
    driver.kick(made.id)
    settle(platform, made.id, "stopped")
    why = take(platform, made.node_name, Feature.GPU_PINNING)
    refused(platform, Feature.GPU_PINNING, why, lambda: instances.request_start(platform, ann(platform), made.id))
    assert row(platform, made.id).status == "stopped"
    assert instances.request_start(platform, ann(platform), made.id, no_gpu=True).status == "starting"


def test_a_stop_is_refused_where_the_system_disk_would_be_lost(platform, driver):
    made = running(platform, driver)
    why = take(platform, made.node_name, Feature.KEPT_SYSTEM_DISK)
    refused(platform, Feature.KEPT_SYSTEM_DISK, why, lambda: instances.request_stop(platform, ann(platform), made.id))
    assert row(platform, made.id).status == "running"
    platform.runtimes[made.node_name].missing.pop(Feature.KEPT_SYSTEM_DISK)
    assert instances.request_stop(platform, ann(platform), made.id).status == "stopping"


def test_a_clone_is_refused_where_disks_cannot_be_cloned(platform, driver):
    made = running(platform, driver)
    why = take(platform, made.node_name, Feature.DISK_CLONES)
    refused(platform, Feature.DISK_CLONES, why, lambda: clone.clone_instance(platform, driver, ann(platform), made.id,
                                                                              "twin"))


def test_a_save_is_refused_where_images_cannot_be_saved(platform, driver):
    from dockyard.services import instance_actions

    made = running(platform, driver)
    why = take(platform, made.node_name, Feature.SAVED_IMAGES)
    refused(platform, Feature.SAVED_IMAGES, why,
            lambda: instance_actions.save(platform, driver, ann(platform), made.id, "env:v1"))


def test_a_migration_goes_only_where_its_gpus_can_be_pinned(platform, driver):
    from dockyard.services.migration import request_migration

    made = running(platform, driver)
    instances.request_stop(platform, ann(platform), made.id)
    driver.kick(made.id)
    settle(platform, made.id, "stopped")
    other = "b" if made.node_name == "local" else "local"
    for runtime in platform.runtimes.values():
        runtime.missing.pop(Feature.MIGRATION)  # both could move disks; the target cannot pin GPUs
    why = take(platform, other, Feature.GPU_PINNING)
    refused(platform, Feature.GPU_PINNING, why, lambda: request_migration(platform, driver, ann(platform), made.id, other))
    with pytest.raises(Conflict, match="no other node has 1 free A100-80GB GPUs"):  # nor chosen for it
        request_migration(platform, driver, ann(platform), made.id, None)
    assert row(platform, made.id).status == "stopped"


# ---- images: builds and pulls ahead -------------------------------------------------------


def test_a_build_on_a_node_without_builds_is_refused_before_it_is_audited(platform):
    why = take(platform, "b", Feature.IMAGE_BUILDS)
    refused(platform, Feature.IMAGE_BUILDS, why, lambda: images.start_prepare(platform, admin(platform), IMAGE, "b"))
    refused(platform, Feature.IMAGE_BUILDS, why, lambda: images.prepare_image(platform, IMAGE, "b", lambda _: None))


def test_a_build_on_every_node_skips_those_without_builds(platform):
    take(platform, "b", Feature.IMAGE_BUILDS)
    lines = []
    images.prepare_image(platform, IMAGE, None, lines.append)
    assert any(line.startswith("[local]") for line in lines) and not any(line.startswith("[b]") for line in lines)
    take(platform, "local", Feature.IMAGE_BUILDS)
    why = "node b had it taken away"  # the first node's reason
    refused(platform, Feature.IMAGE_BUILDS, why, lambda: images.start_prepare(platform, admin(platform), IMAGE, None))


def test_a_registered_image_is_held_only_where_images_are_pulled_ahead(platform):
    take(platform, "b", Feature.IMAGE_CACHE)
    image = images.add_image(platform, "library/ubuntu:24.04", "ubuntu", admin(platform))
    with platform.sessions.begin() as db:
        assert images.nodes_holding(db, image.id) == ["local"]
    why = take(platform, "local", Feature.IMAGE_CACHE)
    refused(platform, Feature.IMAGE_CACHE, "node b had it taken away",
            lambda: images.add_image(platform, "library/debian:12", "debian", admin(platform)))
    refused(platform, Feature.IMAGE_CACHE, why,
            lambda: images.prepare_image(platform, "ubuntu", "local", lambda _: None))


# ---- through the HTTP API ------------------------------------------------------------------


def test_the_api_answers_409_naming_the_ability_and_the_reason(tmp_path):
    from dockyard.api.app import create_app

    with TestClient(create_app(settings(tmp_path))) as http:
        platform = http.app.state.platform
        with platform.sessions.begin() as db:
            user = users.create_user(db, "ann", "correct-horse")
            token = users.issue_token(db, user, timedelta(hours=1))
        why = take(platform, "local", Feature.GPU_PINNING)
        take(platform, "b", Feature.GPU_PINNING)
        before = counts(platform)
        answer = http.post("/api/v1/instances", json={"image": IMAGE, "gpu_count": 1, "gpu_model": "A100-80GB"},
                           headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 409, answer.text
        assert why in answer.json()["detail"] and "(no GPU pinning)" in answer.json()["detail"]
        assert counts(platform) == before


# ---- the console ---------------------------------------------------------------------------


def test_the_console_disables_what_the_node_lacks_saying_why(platform, driver):
    from dockyard.web.pages import templates
    from dockyard.web.live import instance_rows

    made = running(platform, driver)
    why = take(platform, made.node_name, Feature.SAVED_IMAGES)
    with platform.reads.begin() as db:
        [shown] = instance_rows(platform, db, ann(platform))
    assert shown["lacks"]["save"] == f"{why} (no saved images)" and "clone" not in shown["lacks"]
    assert "no migration" in shown["lacks"]["migrate"]  # the fake's disks never move
    macros = templates.env.get_template("_instance_actions.html").make_module({"t": str})
    html = str(macros.actions(shown))
    save = next(line for line in html.splitlines() if 'data-action="save"' in line)
    clone = next(line for line in html.splitlines() if 'data-action="clone"' in line)
    assert f'data-lacks="{why} (no saved images)"' in save and "data-lacks" not in clone
