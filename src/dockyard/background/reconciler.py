"""Level-triggered reconciliation: compare the database with every engine and heal.

Runs once at start-up and then every few seconds. Each pass is idempotent, so a crash
(`kill -9`) at any point is healed by the next pass.
"""

from __future__ import annotations

import logging
from datetime import datetime
from functools import partial

from sqlalchemy import select

from dockyard.background.loop import Loop
from dockyard.core.errors import Conflict
from dockyard.core.states import TRANSITIONAL, Status
from dockyard.db.models import Instance, Node, Volume, utcnow
from dockyard.runtimes.base import HELPER_LABEL
from dockyard.services import autostop, deadlines, migration, notifications
from dockyard.background.driver import Driver
from dockyard.services.held import held
from dockyard.services.names import data_volume
from dockyard.services.lifecycle import transition
from dockyard.services.nodes import connect_nodes
from dockyard.services.platform import Platform
from dockyard.services.volumes import finish_interrupted_resize, finish_removal

log = logging.getLogger(__name__)


def _live_instances(platform: Platform) -> dict[str, Instance]:
    with platform.sessions.begin() as db:
        return {i.id: i for i in db.scalars(select(Instance).where(Instance.status != Status.RELEASED))}


def reconcile_once(platform: Platform, driver: Driver, started_at: datetime) -> None:
    connect_nodes(platform, only_missing=True)  # a node that was down comes back
    with platform.sessions.begin() as db:  # offline ones wait for the liveness watch
        online = set(db.scalars(select(Node.name).where(Node.online.is_(True)))) & set(platform.runtimes)
    for instance in _live_instances(platform).values():
        if (Status(instance.status) in TRANSITIONAL and instance.node_name in online
                and not driver.busy(instance.id)):
            driver.kick(instance.id)
    deadlines.enforce(platform, started_at)
    migration.sweep(platform, driver)  # what a failed, interrupted or finished migration left
    for node in online:
        try:
            reconcile_node(platform, driver, node)
        except Exception:
            log.exception("reconciling node %s failed; next pass retries", node)
    try:  # a released cluster's network goes once its members' containers have
        from dockyard.services.clusters import reap
        reap(platform)
    except Exception:
        log.exception("reaping cluster networks failed; next pass retries")


def reconcile_node(platform: Platform, driver: Driver, node: str) -> None:
    _check_node(platform, driver, platform.runtimes[node], node)


def _check_node(platform, driver, runtime, node: str) -> None:
    # List the engine first, then read the database: anything on the engine was made
    # for a row committed before it, so nothing new is taken for an orphan.
    containers = runtime.list(platform.labels)
    volumes = runtime.list_volumes(platform.labels)
    instances = _live_instances(platform)
    by_id = {c.id: c for c in containers}
    for container in containers:
        if HELPER_LABEL in container.labels:
            continue  # short-lived, removed by whoever started it (and at startup: heal_interrupted)
        owner = instances.get(container.labels.get("dockyard.instance", ""))
        if owner is not None and owner.migrate_peer == node:
            continue  # a migration's: kept until it has run on its new node, then swept
        if owner is None or owner.node_name != node:
            log.info("removing container %s: it belongs to no live instance", container.name)
            runtime.remove(container.id)
        elif Status(owner.status) in TRANSITIONAL or driver.busy(owner.id):
            continue  # the driver is on it
        elif owner.container_id and owner.container_id != container.id:
            log.info("removing container %s: instance %s has another", container.name, owner.id)
            runtime.remove(container.id)
        elif owner.status != Status.RUNNING and container.running:
            # Running without the GPUs it was given: stop it before anyone else gets them.
            log.info("stopping container %s: instance %s is %s", container.name, owner.id, owner.status)
            runtime.stop(container.id, timeout=platform.settings.stop_timeout_s)

    for instance in instances.values():
        if instance.node_name != node or instance.status != Status.RUNNING or driver.busy(instance.id):
            continue
        listed = by_id.get(instance.container_id or "")
        if listed is not None and listed.running:
            continue
        # The listing is older than the instance row: look again before judging.
        info = platform.instances(node).observe(held(instance))
        if info is None:
            transition(platform, instance.id, Status.RUNNING, Status.FAILED,
                       "the container vanished from the node", expected_container=instance.container_id)
        elif not info.running:
            why = "out of memory" if info.oom_killed else f"exit code {info.exit_code}"
            if instance.auto_stop_on_exit:  # the rule the owner asked for: named, and they are told
                cause = f"auto-stop: the start command exited ({why}); disks kept, GPUs returned"
                also = partial(notifications.post, user_id=instance.owner_id, kind=autostop.NOTICE_KIND,
                               message=f"instance {instance.name} was stopped ({cause}).")
            else:
                cause, also = f"the container's command ended ({why}); GPUs returned", None
            transition(platform, instance.id, Status.RUNNING, Status.STOPPED, cause,
                       expected_container=instance.container_id, also=also)

    # Read after the instances: a release that kept its data disk committed its volume
    # row with it, so the disk is in one set or the other.
    with platform.sessions.begin() as db:
        kept = {v.engine_name: v for v in db.scalars(select(Volume).where(Volume.node_name == node,
                                                                         Volume.status != "deleted"))}
        migrating = migration.peer_disks(platform, db, node)  # left to the migration sweep
    live_volumes = {data_volume(platform, i.id) for i in instances.values() if i.node_name == node} | migrating
    live_volumes |= {name for name, v in kept.items() if v.status != "deleting"}
    for volume in volumes:
        if volume not in live_volumes and volume not in kept:
            log.info("removing volume %s: it belongs to no live instance or volume", volume)
            runtime.remove_volume(volume)
    for v in kept.values():
        if v.status == "deleting":  # a removal a crash interrupted
            try:
                finish_removal(platform, v.id)
            except Conflict as exc:
                log.info("%s", exc.message)
        elif v.status == "resizing":
            finish_interrupted_resize(platform, v.id)


class Reconciler(Loop):
    name = "reconciler"

    def __init__(self, platform: Platform, driver: Driver):
        super().__init__(platform.settings.reconcile_interval_s)
        self.platform, self.driver = platform, driver
        self.started_at = utcnow()

    def run_once(self) -> None:
        reconcile_once(self.platform, self.driver, self.started_at)

