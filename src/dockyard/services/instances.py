"""What users do to instances. Each call records intent in one short transaction and
hands the engine work to the driver; nothing here waits on Docker while holding a row."""

from __future__ import annotations

import secrets
import time
from datetime import datetime
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard.core.errors import Conflict, InvalidInput
from dockyard.core.placement import (ANY_MODEL, FreeGpu, HostShare, NodeView, Placement, SharedGpu, Slot, check_request,
                                     place)
from dockyard.core.queue import GpusTaken
from dockyard.core.sharing import MIG, MILLI, parse_share
from dockyard.core.states import HOLDS_GPUS, Status, can_transition, check_user_action
from dockyard.core.gpus import driver_runs
from dockyard.core.validation import RESERVED_ENV_PREFIXES, reserved_env_name
from dockyard.db.models import Gpu, GpuAssignment, GpuSlot, Image, Instance, InstanceEvent, Node, User, utcnow
from dockyard.services import audit, images, ownership, volumes
from dockyard.services.platform import Platform

GIB = 1024**3

ALLOCATION_RETRIES = 5


@dataclass
class CreateRequest:
    image: str
    name: str | None = None
    gpu_model: str = ANY_MODEL
    gpu_count: int = 1
    gpu_share: str | None = None  # part of one GPU: "0.5", "0.25", a MIG profile "1g.18gb"
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict)  # sealed at rest, never shown
    command: str | None = None
    data_disk_gb: int = 50
    ssh_password: bool = False
    auto_stop_idle_minutes: int | None = None  # core/autostop.py, held to operator limits by the caller
    auto_stop_max_minutes: int | None = None
    # Issue 12: wait in line when the GPUs are taken (services/queue.py), up to this long.
    queue: bool = False
    queue_timeout_minutes: int | None = None
    auto_stop_gpu_idle_minutes: int | None = None
    auto_stop_gpu_idle_percent: int | None = None
    auto_stop_at: datetime | None = None
    auto_stop_on_exit: bool = False
    # A clone (services/clone.py): its id, fixed beforehand; its source's node, where the
    # disks are copied; the copy of the system disk it starts from; its first event.
    instance_id: str | None = None
    node: str | None = None
    sysdisk_image: str | None = None
    cause: str | None = None
    # Volumes (docs/volumes.md): ones to mount, whether a release keeps the data disk,
    # and days stopped before an automatic release (None: the operator's setting).
    volumes: list[volumes.Mount] = field(default_factory=list)
    keep_data_on_release: bool = True
    auto_release_days: int | None = None


# ---- reading -------------------------------------------------------------------------


def get_owned(db: Session, user: User, key: str) -> Instance:
    return ownership.get_owned(db, Instance, user, key, "instance")


def list_instances(db: Session, user: User, include_released: bool = False) -> list[Instance]:
    return ownership.list_owned(db, Instance, user, include_released)


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


def events(db: Session, instance_id: str) -> list[InstanceEvent]:
    return list(db.scalars(select(InstanceEvent).where(InstanceEvent.instance_id == instance_id).order_by(InstanceEvent.id)))


# ---- state changes -------------------------------------------------------------------


def transition(
    platform: Platform, instance_id: str, expected: Status, target: Status, cause: str,
    expected_container: str | None = None, also: Callable[[Session], None] | None = None,
    at: datetime | None = None, **fields
) -> bool:
    """Move an instance from `expected` to `target` if it is still in `expected` (and,
    when given, still has `expected_container`).

    Conditional, so two actors cannot both win and a decision made on an old look at
    the engine cannot undo a newer one. Leaving the statuses that hold GPUs frees them
    in the same transaction; `also` adds writes (a notification) that commit with the
    change or not at all. `at`: when it happened, if not now (a node last seen earlier).
    """
    if not can_transition(expected, target):
        raise ValueError(f"illegal transition {expected} -> {target}")
    conditions = [Instance.id == instance_id, Instance.status == expected]
    now = utcnow()  # the event's time and the status's start are one moment
    if expected_container is not None:
        conditions.append(Instance.container_id == expected_container)
    with platform.sessions.begin() as db:
        done = db.execute(
            update(Instance)
            .where(*conditions)
            .values(status=target, status_reason=cause if target == Status.FAILED else None, updated_at=now, **fields)
        ).rowcount
        if not done:
            return False
        if target not in HOLDS_GPUS:
            db.execute(delete(GpuAssignment).where(GpuAssignment.instance_id == instance_id))
        db.add(InstanceEvent(instance_id=instance_id, from_status=expected, to_status=target, cause=cause,
                             at=at or now))
        if also is not None:
            also(db)
    if (expected in HOLDS_GPUS and target not in HOLDS_GPUS) or expected == Status.QUEUED:
        # After the commit, GPUs returned or a waiter gone: the queue's next one may start now.
        platform.gpus_freed.set()
    platform.notify_changed()
    return True


def _lock_allocation(db: Session) -> None:
    # PostgreSQL: serialise allocations on the node rows. SQLite: BEGIN IMMEDIATE already does.
    db.execute(select(Node.name).order_by(Node.name).with_for_update()).all()


def host_share(node: Node, settings) -> HostShare:
    """What instances on `node` get of its CPUs and memory (the driver gives exactly this)."""
    return HostShare(node.cpus_per_gpu, node.memory_per_gpu_bytes, settings.no_gpu_cpus,
                     int(settings.no_gpu_memory_gb * GIB))


def _node_views(db: Session, settings, only_node: str | None = None, include_reserved: bool = False) -> list[NodeView]:
    """The online nodes as placement sees them, in the configured order (pools are tried in
    the order of their first node). GPUs that queued instances wait for are not free to
    anyone else (core/queue.py) unless `include_reserved` (the queue itself)."""
    order = {c.name: i for i, c in enumerate(settings.node_configs())}
    policy = {c.name: c.placement_policy or settings.placement_policy for c in settings.node_configs()}
    nodes = sorted(db.scalars(select(Node).where(Node.online.is_(True))).all(),
                   key=lambda n: (order.get(n.name, len(order)), n.name))
    views = {n.name: NodeView(name=n.name, models={}, cpus=n.cpus, capacity_cpus=n.cpus * settings.cpu_allocation_ratio,
                              capacity_memory_bytes=int(n.memory_bytes * settings.memory_allocation_ratio),
                              host_share=host_share(n, settings), policy=policy.get(n.name, settings.placement_policy))
             for n in nodes if only_node in (None, n.name)}
    # What instances with GPUs hold of each node's CPUs and memory; those without take their
    # small share on top (so a --no-gpu start always reaches its files).
    for instance in db.scalars(select(Instance).where(
            Instance.node_name.in_(views), Instance.status.in_([s.value for s in HOLDS_GPUS]),
            Instance.no_gpu.is_not(True), Instance.gpu_milli > 0)):
        view = views[instance.node_name]
        cpus, memory = view.host_share.of(instance.gpu_milli, view.cpus)
        view.cpus_used, view.memory_used_bytes = view.cpus_used + cpus, view.memory_used_bytes + memory
    present = (Gpu.present.is_(True), Gpu.node_name.in_(views))
    held = set(db.scalars(select(GpuAssignment.slot_id).join(Gpu, Gpu.id == GpuAssignment.gpu_id).where(*present)))
    slots: dict[int, list[GpuSlot]] = {}
    for slot in db.scalars(select(GpuSlot).join(Gpu, Gpu.id == GpuSlot.gpu_id).where(*present).order_by(GpuSlot.slot)):
        slots.setdefault(slot.gpu_id, []).append(slot)
    for gpu in db.scalars(select(Gpu).where(*present).order_by(Gpu.index)):
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
        from dockyard.services import queue
        queue.hide_reserved(db, views.values())
    return list(views.values())


# The requests whose shapes the workload-aware policies expect again (core/placement.py).
HISTORY = 500


def _history(db: Session) -> list[tuple[int, str | None]]:
    rows = db.execute(select(Instance.gpu_count, Instance.gpu_share).order_by(Instance.created_at.desc())
                      .limit(HISTORY)).all()
    return [(count, share) for count, share in rows]


def free_ssh_port(db: Session, platform: Platform, node: str, exclude: set[int] = frozenset()) -> int:
    settings = platform.settings
    used = set(db.scalars(select(Instance.ssh_port).where(
        Instance.node_name == node, Instance.status != Status.RELEASED, Instance.ssh_port.is_not(None))))
    for port in range(settings.ssh_port_min, settings.ssh_port_max + 1):
        if port not in used and port not in exclude:
            return port
    raise Conflict(f"node {node} has no free SSH port left (range {settings.ssh_port_min}-{settings.ssh_port_max})")


def _nodes_for_image(db: Session, views: list[NodeView], image: Image, model: str, count: int) -> list[NodeView]:
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


def _assign(db: Session, instance_id: str, placement: Placement) -> None:
    gpu_of = {slot: gpu.id for gpu in placement.gpus for slot in gpu.slots}
    for slot in placement.slot_ids:
        db.add(GpuAssignment(slot_id=slot, gpu_id=gpu_of.get(slot, placement.gpus[0].id), instance_id=instance_id))
    db.flush()  # the primary key on slot_id refuses a slot someone else holds, here


def _with_retries(action):
    """Run an allocation; a lost race on a GPU (IntegrityError) is retried, not shown."""
    for attempt in range(ALLOCATION_RETRIES):
        try:
            return action()
        except IntegrityError:
            if attempt == ALLOCATION_RETRIES - 1:
                raise Conflict("GPUs are in high demand right now; try again") from None
            time.sleep(0.01 * (attempt + 1))


def check_env(env: dict[str, str], secret_env: dict[str, str]) -> None:
    """Refuse names the platform owns, and a name given both plain and secret."""
    reserved = reserved_env_name([*env, *secret_env])
    if reserved:
        raise InvalidInput(f"env: {reserved} is reserved (names starting with "
                           f"{', '.join(RESERVED_ENV_PREFIXES)} are the platform's)", field="env")
    both = sorted(set(env) & set(secret_env))
    if both:
        raise InvalidInput(f"env: {both[0]} is given both as plain and as secret", field="env")


def check_auto_release_days(platform: Platform, days: int | None) -> None:
    limit = platform.settings.auto_release_days
    if days is not None and not 1 <= days <= limit:
        raise InvalidInput(f"auto_release_days: 1 to {limit} (the operator's limit), not {days}",
                           field="auto_release_days")


def create_instance(platform: Platform, user: User, request: CreateRequest) -> Instance:
    check_env(request.env, request.secret_env)
    from dockyard.services import queue as start_queue
    _check_create_queue(request)
    check_auto_release_days(platform, request.auto_release_days)
    sealed = platform.secret_box.seal(request.secret_env)

    def attempt() -> Instance:
        with platform.sessions.begin() as db:
            image = images.image_named(db, user, request.image)
            volume_node, mounts = volumes.resolve_mounts(db, user, request.volumes)
            if volume_node and request.node and volume_node != request.node:
                raise Conflict(f"volumes: volume {mounts[0][0].name} is on node {volume_node}, the instance must be "
                               f"on node {request.node}", field="volumes")
            only_node = request.node or volume_node
            _lock_allocation(db)
            views = _node_views(db, platform.settings)
            share = parse_share(request.gpu_share) if request.gpu_share is not None else None
            check_request(views, request.gpu_model, request.gpu_count, share)  # a model no node has: 400
            if only_node:
                views = [v for v in views if v.name == only_node]
                if not views:
                    what = "the disks to copy are" if request.node else f"volume {mounts[0][0].name} is"
                    raise Conflict(f"node {only_node} is offline; {what} there")
            queued = None
            try:
                check_request(views, request.gpu_model, request.gpu_count, share)
                views = _nodes_for_image(db, views, image, request.gpu_model, request.gpu_count)
                try:
                    placement = place(views, request.gpu_model, request.gpu_count, share=share, history=_history(db))
                    model = placement.gpus[0].model if placement.gpus else request.gpu_model
                except Conflict as exc:
                    if request.node or not request.gpu_count or share:
                        # A clone goes on its source's node; without GPUs there is nothing to wait
                        # for; a share is never queued (docs/queue.md).
                        raise
                    node, model = start_queue.choose_node(views, request.gpu_model, request.gpu_count, db)
                    if not request.queue:
                        raise start_queue.refusal(db, platform.settings, node, model, request.gpu_count, "create",
                                                  exc.message) from None
                    placement = Placement(node, ())
                    queued = start_queue.queue_fields(db, request.queue_timeout_minutes, Status.CREATING)
            except GpusTaken:
                raise  # it says where and what the ways out are
            except (Conflict, InvalidInput) as exc:
                if request.node:
                    raise Conflict(f"{exc.message} (a clone must be on node {request.node}, with its source's disks)") from None
                if volume_node:
                    raise Conflict(f"{exc.message} (volume {mounts[0][0].name} is on node {volume_node}, so the "
                                   f"instance must run there)") from None
                raise
            from dockyard.services import billing  # issue 5: refuse when the balance cannot pay
            milli = share.milli if share else request.gpu_count * MILLI
            billing.check_can_afford(db, platform.settings, user, model, milli, placement.node)
            instance_id = request.instance_id or secrets.token_hex(6)
            name = request.name or f"instance-{instance_id[:6]}"
            taken = db.scalars(
                select(Instance.id).where(Instance.owner_id == user.id, Instance.name == name, Instance.status != "released")
            ).first()
            if taken:
                raise Conflict(f"name: you already have an instance named {name!r}", field="name")
            instance = Instance(
                ssh_port=free_ssh_port(db, platform, placement.node),
                ssh_password=secrets.token_urlsafe(18) if request.ssh_password else None,
                id=instance_id,
                owner_id=user.id,
                name=name,
                node_name=placement.node,
                image_id=image.id,
                gpu_model=model,
                gpu_count=request.gpu_count,
                gpu_share=share.label if share else None,
                gpu_milli=milli,
                **(queued or {"status": Status.CREATING}),
                env=request.env,
                secret_env=sealed,
                command=request.command,
                # A volume as the data disk replaces the instance's own (and is charged as a volume).
                data_disk_gb=0 if any(path == volumes.DATA_MOUNT for _, path in mounts) else request.data_disk_gb,
                keep_data_on_release=request.keep_data_on_release,
                auto_release_days=request.auto_release_days,
                jupyter_token=secrets.token_hex(24),
                auto_stop_idle_minutes=request.auto_stop_idle_minutes,
                auto_stop_max_minutes=request.auto_stop_max_minutes,
                auto_stop_gpu_idle_minutes=request.auto_stop_gpu_idle_minutes,
                auto_stop_gpu_idle_percent=request.auto_stop_gpu_idle_percent,
                auto_stop_at=request.auto_stop_at,
                auto_stop_on_exit=request.auto_stop_on_exit,
                sysdisk_image=request.sysdisk_image,
            )
            db.add(instance)
            db.flush()
            _assign(db, instance_id, placement)
            volumes.attach(db, instance_id, mounts)
            cause = request.cause or f"created by {user.name}"
            if queued:
                cause = f"{start_queue.joined_message(db, instance)}: {cause}"
            db.add(InstanceEvent(instance_id=instance_id, from_status=None, to_status=instance.status, cause=cause))
            return instance

    instance = _with_retries(attempt)
    platform.notify_changed()
    return instance


def _check_create_queue(request: CreateRequest) -> None:
    from dockyard.core.queue import check_timeout
    if request.queue and not request.gpu_count:
        raise InvalidInput("queue: an instance without GPUs never waits", field="queue")
    if request.queue and request.gpu_share is not None:
        raise InvalidInput(f"queue: a share of a GPU ({request.gpu_share}) is not queued; create it when one is free, "
                           f"or --gpus 1 --queue to wait for a whole GPU", field="queue")
    if request.queue_timeout_minutes is not None and not request.queue:
        raise InvalidInput("queue_timeout_minutes: only with queue", field="queue_timeout_minutes")
    check_timeout(request.queue_timeout_minutes)


def request_stop(platform: Platform, user: User, key: str) -> Instance:
    return _user_action(platform, user, key, "stop")


RELEASE_FIELDS = ("keep_data_on_release", "auto_release_days")


def set_release_policy(platform: Platform, user: User, key: str, changes: dict) -> Instance:
    """Whether a release keeps the data disk, and the days stopped before an automatic one."""
    check_auto_release_days(platform, changes.get("auto_release_days"))
    if changes.get("keep_data_on_release", True) is None:
        raise InvalidInput("keep_data_on_release: true or false", field="keep_data_on_release")
    with platform.sessions.begin() as db:
        instance = get_owned(db, user, key)
        if instance.status == Status.RELEASED:
            raise Conflict(f"instance {instance.name} is released")
        for name, value in changes.items():
            setattr(instance, name, value)
        said = ", ".join(f"{k}={v}" for k, v in changes.items())
        db.add(InstanceEvent(instance_id=instance.id, from_status=instance.status, to_status=instance.status,
                             cause=f"release policy set by {user.name}: {said}"))
    with platform.sessions.begin() as db:
        return db.get(Instance, instance.id)


def request_release(platform: Platform, user: User, key: str, keep_data_as: str | None = None,
                    delete_data: bool = False) -> Instance:
    """Release; the data disk is kept as a volume (named `keep_data_as`, else after the
    instance) unless `delete_data` or the instance was made not to keep it."""
    if keep_data_as and delete_data:
        raise InvalidInput("give keep_data or delete_data, not both")
    fields = {}
    if keep_data_as or delete_data:
        with platform.sessions.begin() as db:
            instance = get_owned(db, user, key)
            if keep_data_as:
                if volumes.has_data_volume(db, instance.id):
                    raise Conflict(f"keep_data: the data disk of {instance.name} is a volume already; it stays",
                                   field="keep_data")
                volumes.check_keep_name(db, user, keep_data_as)
        fields = {"keep_data_on_release": not delete_data, "keep_data_as": keep_data_as}
    return _user_action(platform, user, key, "release", **fields)


def _user_action(platform: Platform, user: User, key: str, action: str, **fields) -> Instance:
    with platform.sessions.begin() as db:
        instance = get_owned(db, user, key)
        current = Status(instance.status)
    target = check_user_action(current, action)
    cause = f"{action} requested by {user.name}"
    if current == Status.QUEUED:
        cause = f"left the queue: {cause}"
    also = lambda db: audit.on_instance(db, user, instance, action)  # noqa: E731 (an admin's, on another's)
    if current != target and not transition(platform, instance.id, current, target, cause, also=also, **fields):
        raise Conflict("the instance changed status meanwhile; look again and retry")
    with platform.sessions.begin() as db:
        return db.get(Instance, instance.id)


def request_start(platform: Platform, user: User, key: str, no_gpu: bool = False, gpu_count: int | None = None,
                  queue: bool = False, queue_timeout_minutes: int | None = None) -> Instance:
    """Start on the same node with GPUs assigned afresh (the old ones first), or none.
    `gpu_count` resizes it, for this and later starts; with `queue`, GPUs that are taken
    are waited for (services/queue.py) instead of refused."""
    from dockyard.services import queue as start_queue
    _check_start_options(no_gpu, gpu_count, queue, queue_timeout_minutes)

    def attempt() -> Instance:
        with platform.sessions.begin() as db:
            instance = get_owned(db, user, key)
            current = Status(instance.status)
            check_user_action(current, "start")
            if queue and instance.cluster_id:
                raise InvalidInput("queue: a cluster member starts with its cluster, not from the queue", field="queue")
            busy = [v.name for v in volumes.mounted(db, instance.id) if v.status != "ready"]
            if busy:
                raise Conflict(f"volume {busy[0]} is being resized or removed; start the instance when it is done")
            _lock_allocation(db)
            views = _node_views(db, platform.settings, only_node=instance.node_name)
            if not views:
                raise Conflict(f"node {instance.node_name} is offline; the instance's disks are there")
            from dockyard.services import billing  # issue 5: refuse when the balance cannot pay
            model, count, share, milli = instance.gpu_model, instance.gpu_count, instance.gpu_share, instance.gpu_milli
            if gpu_count is not None:  # N whole GPUs, a share's instance too
                model, count = _resized(db, platform.settings, instance, views[0], gpu_count)
                share, milli = None, gpu_count * MILLI
            if queue and share:
                raise InvalidInput(f"queue: a share of a GPU ({share}) is not queued; start it when one is free, or "
                                   f"--gpus 1 --queue to wait for a whole GPU", field="queue")
            billing.check_can_afford(db, platform.settings, user, model, milli, instance.node_name, no_gpu=no_gpu)
            placement = Placement(instance.node_name, ())
            values = {"status": Status.STARTING, "gpu_model": model, "gpu_count": count, "gpu_share": share,
                      "gpu_milli": milli}
            preferred = frozenset(instance.container_gpus or [])
            with_gpus = bool(count) and not no_gpu
            if with_gpus and share:
                try:
                    placement = place(views, model, 1, preferred, share=parse_share(share), history=_history(db))
                except Conflict as exc:
                    raise Conflict(f"{exc.message} (on node {instance.node_name}, where the instance's disks are); "
                                   f"start it with --no-gpu to reach its files") from None
            elif with_gpus and len([g for g in views[0].free if g.model == model]) < count:
                if not queue:
                    raise start_queue.refusal(db, platform.settings, instance.node_name, model, count, "start")
                values.update(start_queue.queue_fields(db, queue_timeout_minutes, Status.STARTING))
            else:  # a --no-gpu start too: placement checks the node's CPUs and memory for it
                try:
                    placement = place(views, model if with_gpus else ANY_MODEL, count if with_gpus else 0, preferred,
                                      history=_history(db))
                except Conflict as exc:
                    raise Conflict(f"{exc.message} (on node {instance.node_name}, where the instance's disks are)") from None
            done = db.execute(
                update(Instance)
                .where(Instance.id == instance.id, Instance.status == current)
                .values(no_gpu=no_gpu, status_reason=None, updated_at=utcnow(), **values)
            ).rowcount
            if not done:
                raise Conflict("the instance changed status meanwhile; look again and retry")
            _assign(db, instance.id, placement)
            db.refresh(instance)
            mode = " without GPUs" if no_gpu else ""
            cause = f"start{mode} requested by {user.name}"
            if values["status"] == Status.QUEUED:
                cause = f"{start_queue.joined_message(db, instance)}: {cause}"
            db.add(InstanceEvent(instance_id=instance.id, from_status=current, to_status=values["status"], cause=cause))
            audit.on_instance(db, user, instance, "start", mode.strip())
            return instance

    instance = _with_retries(attempt)
    platform.notify_changed()
    with platform.sessions.begin() as db:
        return db.get(Instance, instance.id)


def _check_start_options(no_gpu: bool, gpu_count: int | None, queue: bool, queue_timeout_minutes: int | None) -> None:
    from dockyard.core.queue import check_timeout
    if gpu_count is not None and no_gpu:
        raise InvalidInput("gpu_count: a start --no-gpu takes no GPUs; give one of --gpus and --no-gpu", field="gpu_count")
    if gpu_count is not None and gpu_count < 1:
        raise InvalidInput("gpu_count: must be 1 or more; --no-gpu starts without GPUs", field="gpu_count")
    if queue and no_gpu:
        raise InvalidInput("queue: a start --no-gpu takes no GPUs and never waits", field="queue")
    if queue_timeout_minutes is not None and not queue:
        raise InvalidInput("queue_timeout_minutes: only with queue", field="queue_timeout_minutes")
    check_timeout(queue_timeout_minutes)


def _resized(db: Session, settings, instance: Instance, view: NodeView, count: int) -> tuple[str, int]:
    """The GPU model and count of a start --gpus N on the instance's own node (its disks
    are there), refused when no node, or not this one, holds that many."""
    model = instance.gpu_model
    if model == ANY_MODEL:  # made without GPUs: the node's model with the most of them
        model = max(view.models, key=lambda m: (view.models[m], m), default=ANY_MODEL)
    check_request(_node_views(db, settings, include_reserved=True), model, count)
    held = view.models.get(model, 0)
    if count > held:
        raise InvalidInput(f"gpu_count: node {view.name}, where the instance's disks are, holds {held} {model} GPUs, "
                           f"not {count}", field="gpu_count")
    return model, count


def wait_for_status(platform: Platform, user: User, key: str, statuses: set[str], timeout: float) -> Instance:
    """Block until the instance reaches one of `statuses` or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        seen = platform.generation
        with platform.reads.begin() as db:
            instance = get_owned(db, user, key)
        left = deadline - time.monotonic()
        if instance.status in statuses or left <= 0:
            return instance
        with platform.changed:
            if platform.generation == seen:  # else a change came while we read: look again
                platform.changed.wait(min(left, 1.0))
