"""What users do to instances. Each call records intent in one short transaction and
hands the engine work to the driver; nothing here waits on Docker while holding a row."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.core.errors import Conflict, InvalidInput
from dockyard.core.placement import ANY_MODEL, NodeView, Placement, check_request, place
from dockyard.core.queue import GpusTaken
from dockyard.core.sharing import MILLI, parse_share
from dockyard.core.states import Status, check_user_action
from dockyard.core.validation import DEFAULT_DATA_DISK_GB, RESERVED_ENV_PREFIXES, reserved_env_name
from dockyard.db.models import Instance, InstanceEvent, User
from dockyard.runtimes.base import Feature
from dockyard.runtimes.instances import Held
from dockyard.services.held import container_gpus, fields as held_fields
from dockyard.services import allocation, audit, images, lifecycle, ownership, volumes
from dockyard.services import queue as start_queue  # `queue` is a parameter of the starts
from dockyard.services.billing import ledger
from dockyard.services.platform import Platform


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
    data_disk_gb: int = DEFAULT_DATA_DISK_GB
    ssh_password: bool = False
    auto_stop_idle_minutes: int | None = None  # core/autostop.py, held to operator limits by the caller
    auto_stop_max_minutes: int | None = None
    # wait in line when the GPUs are taken (services/queue.py), up to this long.
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


def events(db: Session, instance_id: str) -> list[InstanceEvent]:
    return list(db.scalars(select(InstanceEvent).where(InstanceEvent.instance_id == instance_id).order_by(InstanceEvent.id)))


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
            allocation.lock_allocation(db)
            views = allocation.node_views(db, platform.settings)
            share = parse_share(request.gpu_share) if request.gpu_share is not None else None
            check_request(views, request.gpu_model, request.gpu_count, share)  # a model no node has: 400
            if only_node:
                views = [v for v in views if v.name == only_node]
                if not views:
                    what = "the disks to copy are" if request.node else f"volume {mounts[0][0].name} is"
                    raise Conflict(f"node {only_node} is offline; {what} there")
            views = allocation.nodes_able(platform, views, allocation.needs(bool(request.gpu_count or share),
                                                                            request.ssh_password),
                                          "the instance cannot be created")
            queued = None
            try:
                check_request(views, request.gpu_model, request.gpu_count, share)
                views = allocation.nodes_for_image(db, views, image, request.gpu_model, request.gpu_count)
                try:
                    placement = place(views, request.gpu_model, request.gpu_count, share=share, history=allocation.request_history(db))
                    model = placement.gpus[0].model if placement.gpus else request.gpu_model
                except Conflict as exc:
                    if request.node or not request.gpu_count or share:
                        # A clone goes on its source's node; without GPUs there is nothing to wait
                        # for; a share is never queued (docs/queue.md).
                        raise
                    node, model = start_queue.choose_node(views, request.gpu_model, request.gpu_count, db)
                    if not request.queue:
                        raise allocation.gpus_taken(db, platform.settings, node, model, request.gpu_count, "create",
                                                  exc.message) from None
                    placement = Placement(node, ())
                    queued = start_queue.queue_fields(db, request.queue_timeout_minutes, Status.CREATING,
                                                     platform.settings.queue_minute_s)
            except GpusTaken:
                raise  # it says where and what the ways out are
            except (Conflict, InvalidInput) as exc:
                if request.node:
                    raise Conflict(f"{exc.message} (a clone must be on node {request.node}, with its source's disks)") from None
                if volume_node:
                    raise Conflict(f"{exc.message} (volume {mounts[0][0].name} is on node {volume_node}, so the "
                                   f"instance must run there)") from None
                raise
            milli = share.milli if share else request.gpu_count * MILLI
            ledger.check_can_afford(db, platform.settings, user, model, milli, placement.node)
            instance_id = request.instance_id or secrets.token_hex(6)
            name = request.name or f"instance-{instance_id[:6]}"
            taken = db.scalars(
                select(Instance.id).where(Instance.owner_id == user.id, Instance.name == name, Instance.status != "released")
            ).first()
            if taken:
                raise Conflict(f"name: you already have an instance named {name!r}", field="name")
            instance = Instance(
                ssh_port=allocation.free_ssh_port(db, platform, placement.node),
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
                **held_fields(Held(system_disk=request.sysdisk_image)),
            )
            db.add(instance)
            db.flush()
            allocation.assign(db, instance_id, placement)
            volumes.attach(db, instance_id, mounts)
            cause = request.cause or f"created by {user.name}"
            if queued:
                cause = f"{start_queue.joined_message(db, instance)}: {cause}"
            db.add(InstanceEvent(instance_id=instance_id, from_status=None, to_status=instance.status, cause=cause))
            return instance

    instance = allocation.with_retries(attempt)
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


def stop_ends_a_container(instance: Instance) -> bool:
    """Whether a stop ends a container the user may have installed into (a queued start's
    is stopped already): its system disk must then be kept."""
    return bool(instance.container_id) and instance.status != Status.QUEUED


def request_stop(platform: Platform, user: User, key: str) -> Instance:
    with platform.reads.begin() as db:
        instance = get_owned(db, user, key)
    if stop_ends_a_container(instance):
        platform.refuse_lacking(instance.node_name, Feature.KEPT_SYSTEM_DISK,
                                f"instance {instance.name} cannot stop without losing its system disk")
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
    if current != target and not lifecycle.transition(platform, instance.id, current, target, cause, also=also, **fields):
        raise Conflict("the instance changed status meanwhile; look again and retry")
    with platform.sessions.begin() as db:
        return db.get(Instance, instance.id)


def request_start(platform: Platform, user: User, key: str, no_gpu: bool = False, gpu_count: int | None = None,
                  queue: bool = False, queue_timeout_minutes: int | None = None) -> Instance:
    """Start on the same node with GPUs assigned afresh (the old ones first), or none.
    `gpu_count` resizes it, for this and later starts; with `queue`, GPUs that are taken
    are waited for (services/queue.py) instead of refused."""
    _check_start_options(no_gpu, gpu_count, queue, queue_timeout_minutes)

    def attempt() -> tuple[Instance, Status, Status]:
        with platform.sessions.begin() as db:
            instance = get_owned(db, user, key)
            current = Status(instance.status)
            check_user_action(current, "start")
            if queue and instance.cluster_id:
                raise InvalidInput("queue: a cluster member starts with its cluster, not from the queue", field="queue")
            busy = [v.name for v in volumes.mounted(db, instance.id) if v.status != "ready"]
            if busy:
                raise Conflict(f"volume {busy[0]} is being resized or removed; start the instance when it is done")
            allocation.lock_allocation(db)
            views = allocation.node_views(db, platform.settings, only_node=instance.node_name)
            if not views:
                raise Conflict(f"node {instance.node_name} is offline; the instance's disks are there")
            model, count, share, milli = instance.gpu_model, instance.gpu_count, instance.gpu_share, instance.gpu_milli
            if gpu_count is not None:  # N whole GPUs, a share's instance too
                model, count = _resized(db, platform.settings, instance, views[0], gpu_count)
                share, milli = None, gpu_count * MILLI
            if count and not no_gpu:
                platform.refuse_lacking(instance.node_name, Feature.GPU_PINNING,
                                        f"instance {instance.name} cannot start with GPUs (start it with --no-gpu)")
            if queue and share:
                raise InvalidInput(f"queue: a share of a GPU ({share}) is not queued; start it when one is free, or "
                                   f"--gpus 1 --queue to wait for a whole GPU", field="queue")
            ledger.check_can_afford(db, platform.settings, user, model, milli, instance.node_name, no_gpu=no_gpu)
            placement = Placement(instance.node_name, ())
            values = {"status": Status.STARTING, "gpu_model": model, "gpu_count": count, "gpu_share": share,
                      "gpu_milli": milli}
            preferred = container_gpus(instance)
            with_gpus = bool(count) and not no_gpu
            if with_gpus and share:
                try:
                    placement = place(views, model, 1, preferred, share=parse_share(share), history=allocation.request_history(db))
                except Conflict as exc:
                    raise Conflict(f"{exc.message} (on node {instance.node_name}, where the instance's disks are); "
                                   f"start it with --no-gpu to reach its files") from None
            elif with_gpus and len([g for g in views[0].free if g.model == model]) < count:
                if not queue:
                    raise allocation.gpus_taken(db, platform.settings, instance.node_name, model, count, "start")
                values.update(start_queue.queue_fields(db, queue_timeout_minutes, Status.STARTING,
                                                           platform.settings.queue_minute_s))
            else:  # a --no-gpu start too: placement checks the node's CPUs and memory for it
                try:
                    placement = place(views, model if with_gpus else ANY_MODEL, count if with_gpus else 0, preferred,
                                      history=allocation.request_history(db))
                except Conflict as exc:
                    raise Conflict(f"{exc.message} (on node {instance.node_name}, where the instance's disks are)") from None
            mode = " without GPUs" if no_gpu else ""
            target = Status(values.pop("status"))
            event = lifecycle.change(db, instance.id, current, target, f"start{mode} requested by {user.name}",
                                     no_gpu=no_gpu, **values)
            if event is None:
                raise Conflict("the instance changed status meanwhile; look again and retry")
            allocation.assign(db, instance.id, placement)
            db.refresh(instance)
            if target == Status.QUEUED:
                event.cause = f"{start_queue.joined_message(db, instance)}: {event.cause}"
            audit.on_instance(db, user, instance, "start", mode.strip())
            return instance, current, target

    instance, current, target = allocation.with_retries(attempt)
    lifecycle.announce(platform, current, target)
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
    check_request(allocation.node_views(db, settings, include_reserved=True), model, count)
    held = view.models.get(model, 0)
    if count > held:
        raise InvalidInput(f"gpu_count: node {view.name}, where the instance's disks are, holds {held} {model} GPUs, "
                           f"not {count}", field="gpu_count")
    return model, count
