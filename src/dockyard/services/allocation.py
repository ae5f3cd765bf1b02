"""Who holds which GPUs, and what is free: the views placement decides on, taken under
one lock, and the assignments it writes. Creates, starts, clusters, migrations and the
queue share it."""

from __future__ import annotations

import time
from collections import Counter

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard.core import queue as rules
from dockyard.core.errors import Conflict, InvalidInput
from dockyard.core.gpus import driver_runs
from dockyard.core.placement import ANY_MODEL, FreeGpu, HostShare, NodeView, Placement, SharedGpu, Slot
from dockyard.core.sharing import MIG
from dockyard.core.states import HOLDS_GPUS, Status
from dockyard.db.models import Gpu, GpuAssignment, GpuSlot, Image, Instance, Node
from dockyard.runtimes.base import Feature
from dockyard.services import images, queue
from dockyard.services.platform import Platform

GIB = 1024**3
ALLOCATION_RETRIES = 5


def assigned_gpus(db: Session, instance_id: str) -> list[Gpu]:
    """The GPUs an instance holds, whole or in part (each once)."""
    return list(
        db.scalars(
            select(Gpu)
            .where(Gpu.id.in_(select(GpuAssignment.gpu_id).where(GpuAssignment.instance_id == instance_id)))
            .order_by(Gpu.index)
        )
    )


def assigned_slots(db: Session, instance_id: str) -> list[GpuSlot]:
    return list(db.scalars(select(GpuSlot).join(GpuAssignment, GpuAssignment.slot_id == GpuSlot.id)
                           .where(GpuAssignment.instance_id == instance_id).order_by(GpuSlot.gpu_id, GpuSlot.slot)))


def lock_allocation(db: Session) -> None:
    # PostgreSQL: serialise allocations on the node rows. SQLite: BEGIN IMMEDIATE already does.
    if db.get_bind().dialect.name != "sqlite":
        db.execute(select(Node.name).order_by(Node.name).with_for_update()).all()


def host_share(node, settings) -> HostShare:
    """What instances on `node` (a Node, or a row of its columns) get of its CPUs and
    memory (the driver gives exactly this)."""
    return HostShare(node.cpus_per_gpu, node.memory_per_gpu_bytes, settings.no_gpu_cpus,
                     int(settings.no_gpu_memory_gb * GIB))


def node_views(db: Session, settings, only_node: str | None = None, include_reserved: bool = False) -> list[NodeView]:
    """The online nodes as placement sees them, in the configured order (pools are tried in
    the order of their first node). GPUs that queued instances wait for are not free to
    anyone else (core/queue.py) unless `include_reserved` (the queue itself)."""
    order = {c.name: i for i, c in enumerate(settings.node_configs())}
    policy = {c.name: c.placement_policy or settings.placement_policy for c in settings.node_configs()}
    # Columns, not objects: this runs inside every create's transaction.
    nodes = sorted(db.execute(select(Node.name, Node.cpus, Node.memory_bytes, Node.cpus_per_gpu,
                                     Node.memory_per_gpu_bytes).where(Node.online.is_(True))).all(),
                   key=lambda n: (order.get(n.name, len(order)), n.name))
    views = {n.name: NodeView(name=n.name, models={}, cpus=n.cpus, capacity_cpus=n.cpus * settings.cpu_allocation_ratio,
                              capacity_memory_bytes=int(n.memory_bytes * settings.memory_allocation_ratio),
                              host_share=host_share(n, settings), policy=policy.get(n.name, settings.placement_policy))
             for n in nodes if only_node in (None, n.name)}
    # What instances with GPUs hold of each node's CPUs and memory; those without take their
    # small share on top (so a --no-gpu start always reaches its files).
    for instance in db.execute(select(Instance.node_name, Instance.gpu_milli).where(
            Instance.node_name.in_(views), Instance.status.in_([s.value for s in HOLDS_GPUS]),
            Instance.no_gpu.is_not(True), Instance.gpu_milli > 0)):
        view = views[instance.node_name]
        cpus, memory = view.host_share.of(instance.gpu_milli, view.cpus)
        view.cpus_used, view.memory_used_bytes = view.cpus_used + cpus, view.memory_used_bytes + memory
    present = (Gpu.present.is_(True), Gpu.node_name.in_(views))
    held = set(db.scalars(select(GpuAssignment.slot_id).join(Gpu, Gpu.id == GpuAssignment.gpu_id).where(*present)))
    slots: dict[int, list] = {}  # a GPU's slot rows
    for slot in db.execute(select(GpuSlot.id, GpuSlot.gpu_id, GpuSlot.mig_profile, GpuSlot.mig_uuid)
                           .join(Gpu, Gpu.id == GpuSlot.gpu_id).where(*present).order_by(GpuSlot.slot)):
        slots.setdefault(slot.gpu_id, []).append(slot)
    for gpu in db.execute(select(Gpu.id, Gpu.index, Gpu.uuid, Gpu.model, Gpu.sharing, Gpu.node_name)
                          .where(*present).order_by(Gpu.index)):
        view, own = views[gpu.node_name], slots.get(gpu.id, [])
        facts = dict(id=gpu.id, index=gpu.index, uuid=gpu.uuid, model=gpu.model)
        if gpu.sharing != MIG:  # a GPU in MIG mode is rented by its instances only
            view.models[gpu.model] = view.models.get(gpu.model, 0) + 1
            if own and not any(s.id in held for s in own):
                view.free.append(FreeGpu(**facts, slots=tuple(s.id for s in own)))
        if gpu.sharing and own:
            view.shared.append(SharedGpu(
                FreeGpu(**facts), gpu.sharing,
                tuple(Slot(s.id, s.id not in held, s.mig_profile, s.mig_uuid) for s in own)))
    if not include_reserved:
        queue.hide_reserved(db, views.values())
    return list(views.values())


# The requests whose shapes the workload-aware policies expect again (core/placement.py).
HISTORY = 500


def request_history(db: Session) -> Counter[tuple[int, str | None]]:
    """How many of the last HISTORY requests asked for each (count, share): counted by the
    database, since every create reads it."""
    recent = (select(Instance.gpu_count, Instance.gpu_share).order_by(Instance.created_at.desc())
              .limit(HISTORY).subquery())
    rows = db.execute(select(recent.c.gpu_count, recent.c.gpu_share, func.count())
                      .group_by(recent.c.gpu_count, recent.c.gpu_share)).all()
    return Counter({(count, share): n for count, share, n in rows})


def free_ssh_port(db: Session, platform: Platform, node: str, exclude: set[int] = frozenset()) -> int | None:
    """A free host port for the instance's sshd; None on a node without host SSH ports
    (the instance then has no SSH endpoint, and says so)."""
    if platform.lacks(node, Feature.HOST_SSH_PORTS):
        return None
    settings = platform.settings
    used = set(db.scalars(select(Instance.ssh_port).where(
        Instance.node_name == node, Instance.status != Status.RELEASED, Instance.ssh_port.is_not(None))))
    for port in range(settings.ssh_port_min, settings.ssh_port_max + 1):
        if port not in used and port not in exclude:
            return port
    raise Conflict(f"node {node} has no free SSH port left (range {settings.ssh_port_min}-{settings.ssh_port_max})")


def needs(gpus: bool, ssh: bool = False) -> list[Feature]:
    """The optional abilities an instance's node must have: GPUs the platform chose, by
    UUID, when it takes any; host SSH ports when its SSH is asked for (a password)."""
    return [Feature.GPU_PINNING] * gpus + [Feature.HOST_SSH_PORTS] * ssh


def nodes_able(platform: Platform, views: list[NodeView], features: list[Feature], what: str) -> list[NodeView]:
    """The nodes that have every one of `features`: placement skips the others, as a
    migration's does. When none is left, `what` is refused with the first one's reason."""
    able = [v for v in views if not any(platform.lacks(v.name, f) for f in features)]
    if views and not able:
        for feature in features:
            platform.refuse_lacking(views[0].name, feature, what)
    return able


def nodes_for_image(db: Session, views: list[NodeView], image: Image, model: str, count: int) -> list[NodeView]:
    """Only nodes whose driver runs the image's CUDA version and that hold the image. The
    driver comes first: a node that can never run the image is the real reason, before
    the image not being built or prepared yet."""
    if count and image.min_driver:
        nodes = {n.name: n for n in db.scalars(select(Node).where(Node.name.in_([v.name for v in views])))}
        fitting = [v for v in views if driver_runs(nodes[v.name].driver_version, image.min_driver)]
        wanted = [v for v in views if model == ANY_MODEL or model in v.models]
        if wanted and not [v for v in fitting if v in wanted]:
            node = nodes[wanted[0].name]
            raise InvalidInput(
                f"image: node {node.name} has NVIDIA driver {node.driver_version} (CUDA up to {node.cuda_version}); "
                f"image {image.name} needs CUDA {image.cuda}, driver {image.min_driver} or newer",
                field="image",
            )
        views = fitting
    images.require_ready(image)
    holding = set(images.nodes_holding(db, image.id))
    if not holding & {v.name for v in views}:
        raise Conflict(f"image {image.name} is on no online node; an admin prepares it with "
                       f"`dockyard admin images build|pull {image.name}`")
    return [v for v in views if v.name in holding]


def assign(db: Session, instance_id: str, placement: Placement) -> None:
    gpu_of = {slot: gpu.id for gpu in placement.gpus for slot in gpu.slots}
    for slot in placement.slot_ids:
        db.add(GpuAssignment(slot_id=slot, gpu_id=gpu_of.get(slot, placement.gpus[0].id), instance_id=instance_id))
    db.flush()  # the primary key on slot_id refuses a slot someone else holds, here


def with_retries(action):
    """Run an allocation; a lost race on a GPU (IntegrityError) is retried, not shown."""
    for attempt in range(ALLOCATION_RETRIES):
        try:
            return action()
        except IntegrityError:
            if attempt == ALLOCATION_RETRIES - 1:
                raise Conflict("GPUs are in high demand right now; try again") from None
            time.sleep(0.01 * (attempt + 1))


def gpus_taken(db: Session, settings, node: str, model: str, needed: int, what: str,
               summary: str | None = None) -> rules.GpusTaken:
    """The refusal for a start or create on `node` whose GPUs are taken, with the real
    free count (reserved ones included) and the line ahead."""
    views = node_views(db, settings, only_node=node, include_reserved=True)
    free = sum(1 for g in views[0].free if g.model == model) if views else 0
    return rules.GpusTaken(node, model, needed, free, len(queue.waiters(db, node, model)), what, summary)
