"""The driver's and the reconciler's failure paths, on the in-memory runtime: a start the
engine refuses, a host port something else holds, a container that vanishes, an engine
that stops answering, a slow start. The same code as on Docker, in milliseconds."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from dockyard.core.states import Status
from dockyard.background.reconciler import reconcile_once
from dockyard.services import instances
from tests.unit import on_fake
from tests.unit.on_fake import IMAGE, ann, create, row, settle, settle_idle

platform, driver, fake = on_fake.platform, on_fake.driver, on_fake.fake  # its fixtures


def test_an_instance_is_created_and_runs_in_its_container(platform, driver, fake):
    instance_id = create(platform, driver)
    running = settle(platform, instance_id, Status.RUNNING)
    container = fake.containers[running.container_id]
    assert container.status == "running" and container.spec.labels["dockyard.instance"] == instance_id
    assert any(path.endswith("authorized_keys") for path in container.files)  # its start files went in


def test_a_start_the_engine_refuses_fails_with_the_engines_words(platform, driver, fake):
    fake.fail_starts = 1
    instance_id = create(platform, driver)
    failed = settle(platform, instance_id, Status.FAILED, Status.RUNNING)
    assert failed.status == Status.FAILED and "told to fail" in failed.status_reason


def test_a_taken_ssh_port_is_moved_and_the_instance_runs(platform, driver, fake):
    instance = instances.create_instance(platform, ann(platform), instances.CreateRequest(
        image=IMAGE, gpu_model="A100-80GB", gpu_count=1))
    fake.taken_ports.add(instance.ssh_port)
    driver.kick(instance.id)
    running = settle(platform, instance.id, Status.RUNNING, Status.FAILED)
    assert running.status == Status.RUNNING and running.ssh_port != instance.ssh_port


def test_a_container_that_vanishes_fails_its_instance_on_the_next_pass(platform, driver, fake):
    instance_id = create(platform, driver)
    running = settle_idle(platform, driver, instance_id, Status.RUNNING)
    fake.vanish(running.container_id)
    reconcile_once(platform, driver, datetime.now(timezone.utc))
    failed = settle(platform, instance_id, Status.FAILED)
    assert failed.status_reason == "the container vanished from the node"


def test_a_container_whose_command_ends_stops_its_instance(platform, driver, fake):
    instance_id = create(platform, driver)
    running = settle_idle(platform, driver, instance_id, Status.RUNNING)
    fake.exit(running.container_id, 3)
    reconcile_once(platform, driver, datetime.now(timezone.utc))
    settle(platform, instance_id, Status.STOPPED)
    with platform.sessions.begin() as db:
        assert "exit code 3" in instances.events(db, instance_id)[-1].cause


def test_an_engine_that_stops_answering_leaves_the_stop_to_a_later_pass(platform, driver, fake):
    instance_id = create(platform, driver)
    settle_idle(platform, driver, instance_id, Status.RUNNING)
    fake.down = True
    instances.request_stop(platform, ann(platform), instance_id)
    driver.kick(instance_id)
    time.sleep(0.3)
    assert row(platform, instance_id).status == Status.STOPPING  # kept, GPUs held, retried
    fake.down = False
    reconcile_once(platform, driver, datetime.now(timezone.utc))
    assert settle(platform, instance_id, Status.STOPPED).status == Status.STOPPED


def test_a_release_removes_the_container_and_its_disks(platform, driver, fake):
    instance_id = create(platform, driver)
    settle(platform, instance_id, Status.RUNNING)
    instances.request_release(platform, ann(platform), instance_id, delete_data=True)
    driver.kick(instance_id)
    settle(platform, instance_id, Status.RELEASED)
    assert not [c for c in fake.containers.values() if c.spec.labels.get("dockyard.instance") == instance_id]


def test_a_slow_start_is_left_to_finish_by_the_reconciler_and_makes_one_container(platform, driver, fake):
    fake.start_delay_s = 0.6
    instance_id = create(platform, driver)
    deadline = time.monotonic() + 5
    while not any(c.spec.labels.get("dockyard.instance") == instance_id for c in fake.containers.values()):
        assert time.monotonic() < deadline, "the driver made no container"
        time.sleep(0.01)
    reconcile_once(platform, driver, datetime.now(timezone.utc))  # mid-start: neither failed nor started again
    assert row(platform, instance_id).status == Status.CREATING
    running = settle(platform, instance_id, Status.RUNNING, Status.FAILED)
    assert running.status == Status.RUNNING
    assert [c for c in fake.containers if fake.containers[c].spec.labels.get("dockyard.instance") == instance_id] \
        == [running.container_id]
