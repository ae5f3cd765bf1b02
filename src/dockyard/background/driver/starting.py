"""creating or starting -> running: a container with exactly the assigned GPUs, over the
instance's system disk, started."""

from __future__ import annotations

import logging

from dockyard.background.driver import files
from dockyard.background.driver.checks import check_environment
from dockyard.background.driver.context import Context
from dockyard.background.driver.spec import access_for, container_spec, disks
from dockyard.core.states import Status
from dockyard.db.models import Image, Instance, InstanceEvent, Node, utcnow
from dockyard.runtimes.base import PortTaken
from dockyard.runtimes.instances import Held
from dockyard.services.held import held, recorder
from dockyard.services.allocation import assigned_gpus, assigned_slots, free_ssh_port
from dockyard.services.lifecycle import transition
from dockyard.services.names import container_name, mps_daemon_name, user_network

log = logging.getLogger(__name__)


def run(ctx: Context, instance: Instance, status: Status) -> None:
    """creating/starting -> running: make sure a container with exactly the assigned
    GPUs exists over this instance's system disk, and start it."""
    platform = ctx.platform
    runtime = platform.runtime(instance.node_name)
    with platform.reads.begin() as db:
        gpus = assigned_gpus(db, instance.id)
        access = access_for(instance, gpus, assigned_slots(db, instance.id))
        image = db.get(Image, instance.image_id)
        node = db.get(Node, instance.node_name)
        mounts = disks(platform, db, instance)
    # At every start: a disk is made if missing and mounted again after a reboot.
    for name, (size_gb, disk_labels, _) in mounts.items():
        runtime.ensure_volume(name, disk_labels, size_gb, before_start=True)
    engine = platform.instances(instance.node_name)
    record = recorder(platform, instance)
    now = engine.provision(instance.id, container_name(platform, instance.id), access.device_ids, held(instance),
                           record)
    if now.container_id is None:
        member = None
        if instance.cluster_id:  # a cluster member joins its cluster's own network
            from dockyard.services import clusters
            member = clusters.member_setup(platform, instance)
            network = member.network
        else:
            network = runtime.ensure_network(user_network(platform, instance.owner_id), platform.labels)
        if access.mps_gpu:  # a time-sliced share under MPS: its GPU's daemon first
            daemon = mps_daemon_name(platform, access.mps_gpu)
            runtime.ensure_mps_daemon(daemon, access.mps_gpu, platform.settings.gpu_probe_image, daemon,
                                      platform.labels)
        spec = container_spec(platform, instance, node, gpus, access, now.system_disk or image.ref, network, mounts,
                              member)
        now = engine.create(spec, now, record)
        if member:  # the MPI/DeepSpeed hostfile, before anything in it runs
            clusters.write_hostfile(engine, now, member)
    if status == Status.CREATING and not now.system_disk:
        files.write_mirrors(platform, engine, now, instance)  # idempotent: a retry rewrites them
    files.write_start_files(platform, engine, now, instance)
    try:
        engine.start(now)
    except PortTaken:
        if not instance.ssh_port:
            raise
        _move_ssh_port(ctx, instance, status, now)
        return  # the drive loop's next pass makes the container on the new port
    cause = "container started" + (f" with GPUs {', '.join(str(g.index) for g in gpus)}" if gpus else " without GPUs")
    transition(platform, instance.id, status, Status.RUNNING, cause, started_at=utcnow(),
               event_fields={"with_gpus": bool(gpus)})
    if image.framework:  # images of our family carry the self-test
        ctx.checks.submit(check_environment, platform, instance.id)
    engine.drop_old_disks(instance.id, now)


def _move_ssh_port(ctx: Context, instance: Instance, status: Status, now: Held) -> None:
    """Another program holds the instance's SSH port on the node: take another port, and
    let the engine make the container again (keeping the system disk of an instance that
    has run before)."""
    platform = ctx.platform
    taken = ctx.taken_ports.setdefault(instance.node_name, set())
    taken.add(instance.ssh_port)
    platform.instances(instance.node_name).remake(instance.id, now, status != Status.CREATING,
                                                  recorder(platform, instance))
    with platform.sessions.begin() as db:
        row = db.get(Instance, instance.id)
        old, row.ssh_port = row.ssh_port, free_ssh_port(db, platform, row.node_name, exclude=taken)
        db.add(InstanceEvent(instance_id=row.id, from_status=row.status, to_status=row.status,
                             cause=f"SSH port {old} is held by another program on the node: moved to {row.ssh_port}"))
    log.warning("instance %s: SSH port %s taken on %s, moved to another", instance.id, old, instance.node_name)
