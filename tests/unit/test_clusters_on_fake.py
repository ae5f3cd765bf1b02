"""Clusters' failure paths on the in-memory runtime: a member whose start the engine
refuses, a cluster network the engine cannot make, a removal while the engine does not
answer. As the code defines it, a failed member gives its GPUs back and leaves the cluster
degraded (a cluster start retries it, a removal takes everything); a removal the engine
refuses is kept and finished when it answers again, the network last."""

from __future__ import annotations

from datetime import datetime, timezone

from dockyard.background.reconciler import reconcile_once
from dockyard.core.states import Status
from dockyard.db.models import Cluster
from dockyard.services import clusters
from tests.unit import on_fake
from tests.unit.on_fake import IMAGE, ann, causes, gpus_held, row, settle, settle_idle, until

platform, driver, fake = on_fake.platform, on_fake.driver, on_fake.fake  # its fixtures


def create(platform, driver, members: int = 2) -> tuple[str, list[str]]:
    cluster, ids = clusters.create_cluster(platform, ann(platform), clusters.ClusterRequest(
        name="job", image=IMAGE, nodes=members, gpus=1, gpu_model="A100-80GB"))
    for instance_id in ids:
        driver.kick(instance_id)
    return cluster.id, ids


def cluster_row(platform, cluster_id: str) -> tuple[Cluster, str]:
    with platform.sessions.begin() as db:
        found = db.get(Cluster, cluster_id)
        status = clusters.status_of(db, found)
        db.expunge(found)
        return found, status


def settle_all(platform, driver, ids: list[str], *statuses: str) -> list:
    return [settle_idle(platform, driver, instance_id, *statuses) for instance_id in ids]


def release(platform, driver, cluster_id: str) -> list[str]:
    _, ids = clusters.release_cluster(platform, ann(platform), cluster_id)
    for instance_id in ids:
        driver.kick(instance_id)
    return ids


def test_a_cluster_runs_its_members_on_its_own_network(platform, driver, fake):
    cluster_id, ids = create(platform, driver)
    members = settle_all(platform, driver, ids, Status.RUNNING, Status.FAILED)
    assert [m.status for m in members] == [Status.RUNNING, Status.RUNNING]
    network = clusters.network_name(platform, cluster_id)
    assert network in fake.networks and fake.subnets[network] == cluster_row(platform, cluster_id)[0].subnet
    assert all(fake.containers[m.container_id].spec.network == network for m in members)
    assert cluster_row(platform, cluster_id)[1] == "running"


def test_a_member_whose_start_is_refused_frees_its_gpus_and_the_cluster_is_degraded(platform, driver, fake):
    fake.fail_starts = 1
    cluster_id, ids = create(platform, driver)
    members = settle_all(platform, driver, ids, Status.RUNNING, Status.FAILED)
    failed = [m for m in members if m.status == Status.FAILED]
    assert len(failed) == 1 and "told to fail" in failed[0].status_reason
    assert gpus_held(platform, failed[0].id) == 0
    assert cluster_row(platform, cluster_id)[1] == "degraded"

    _, started = clusters.start_cluster(platform, ann(platform), cluster_id)  # retries the failed one only
    assert started == [failed[0].id]
    driver.kick(failed[0].id)
    settle(platform, failed[0].id, Status.RUNNING)
    assert cluster_row(platform, cluster_id)[1] == "running"


def test_a_cluster_whose_members_all_fail_leaves_nothing_once_removed(platform, driver, fake):
    fake.fail_starts = 2
    cluster_id, ids = create(platform, driver)
    assert {m.status for m in settle_all(platform, driver, ids, Status.RUNNING, Status.FAILED)} == {Status.FAILED}
    assert gpus_held(platform) == 0 and cluster_row(platform, cluster_id)[1] == "failed"
    release(platform, driver, cluster_id)
    settle_all(platform, driver, ids, Status.RELEASED)
    clusters.reap(platform)
    cluster, status = cluster_row(platform, cluster_id)
    assert cluster.status == "released" and status == "released"
    assert fake.networks == {n: i for n, i in fake.networks.items() if "cluster" not in n} and fake.subnets == {}
    assert not [c for c in fake.containers.values() if c.spec.labels.get("dockyard.instance") in ids]


def test_a_network_the_engine_cannot_make_fails_the_members_with_the_reason(platform, driver, fake):
    fake.fail_networks = 2
    cluster_id, ids = create(platform, driver)
    members = settle_all(platform, driver, ids, Status.RUNNING, Status.FAILED)
    assert [m.status for m in members] == [Status.FAILED, Status.FAILED]
    for member in members:
        assert "creating network" in member.status_reason and "creating network" in causes(platform, member.id)[-1]
        assert member.container_id is None  # never made without its network
    assert gpus_held(platform) == 0
    assert clusters.network_name(platform, cluster_id) not in fake.networks

    _, started = clusters.start_cluster(platform, ann(platform), cluster_id)  # the engine can now
    for instance_id in started:
        driver.kick(instance_id)
    assert [m.status for m in settle_all(platform, driver, ids, Status.RUNNING, Status.FAILED)] == [Status.RUNNING] * 2


def test_a_removal_while_the_engine_does_not_answer_is_finished_when_it_answers(platform, driver, fake):
    cluster_id, ids = create(platform, driver)
    settle_all(platform, driver, ids, Status.RUNNING)
    fake.down = True
    release(platform, driver, cluster_id)
    for instance_id in ids:  # kept releasing, the GPUs held: a container may still run on them
        until(lambda: "does not answer" in (row(platform, instance_id).status_reason or ""), "the refused release")
        assert settle_idle(platform, driver, instance_id, Status.RELEASING).status == Status.RELEASING
    assert gpus_held(platform) == 2
    clusters.reap(platform)
    assert cluster_row(platform, cluster_id)[1] == "releasing"

    fake.down = False
    reconcile_once(platform, driver, datetime.now(timezone.utc))
    settle_all(platform, driver, ids, Status.RELEASED)
    assert gpus_held(platform) == 0
    clusters.reap(platform)
    assert cluster_row(platform, cluster_id)[0].status == "released"
    assert clusters.network_name(platform, cluster_id) not in fake.networks


def test_a_network_the_engine_will_not_remove_keeps_the_cluster_releasing_until_it_does(platform, driver, fake):
    cluster_id, ids = create(platform, driver)
    settle_all(platform, driver, ids, Status.RUNNING)
    release(platform, driver, cluster_id)
    settle_all(platform, driver, ids, Status.RELEASED)
    fake.down = True
    clusters.reap(platform)
    assert cluster_row(platform, cluster_id)[0].status == "releasing"
    fake.down = False
    clusters.reap(platform)
    assert cluster_row(platform, cluster_id)[0].status == "released"
    assert clusters.network_name(platform, cluster_id) not in fake.networks
    assert row(platform, ids[0]).status == Status.RELEASED
