"""The read model of an instance, for the API and the console alike: the row as stored
with what it takes other tables to say (owner and image names, GPUs held, SSH command,
price and cost so far, queue place, a warned auto-stop, mounted volumes).

`views` builds many at once in a fixed number of queries, whatever the number of rows:
a list page must not cost a query per instance."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dockyard.core import billing as core_billing
from dockyard.core import queue as queue_rules
from dockyard.core.kinds import COST_KINDS
from dockyard.core.states import Status
from dockyard.db.billing_models import Posting
from dockyard.db.models import Gpu, GpuAssignment, Image, Instance, InstanceEvent, Node, User, Volume, utcnow
from dockyard.services import autostop, ownership, queue
from dockyard.services.billing import prices
from dockyard.services.platform import Platform
from dockyard.services.volumes import DATA_MOUNT

HIDDEN = "(hidden)"


@dataclass(frozen=True)
class GpuView:
    index: int
    uuid: str
    model: str
    simulated: bool


@dataclass
class InstanceView:
    """The fields of the API's InstanceOut (api/schemas.py), by the same names."""

    id: str
    name: str
    owner: str
    status: str
    status_reason: str | None
    node: str
    image: str
    gpu_model: str
    gpu_count: int
    gpu_share: str | None
    no_gpu: bool
    gpus: list[GpuView]
    env: dict[str, str]
    secret_env_names: list[str]
    command: str | None
    data_disk_gb: int
    env_check: dict | None
    ssh_command: str | None
    last_ssh_at: datetime | None
    last_jupyter_at: datetime | None
    auto_stop_idle_minutes: int | None
    auto_stop_max_minutes: int | None
    queue_position: int | None
    queued_at: datetime | None
    queue_deadline: datetime | None
    auto_stop_gpu_idle_minutes: int | None
    auto_stop_gpu_idle_percent: int | None
    auto_stop_at: datetime | None
    auto_stop_on_exit: bool
    auto_stop_when_exits: str | None
    auto_stop_pending: str | None
    auto_stop_notes: list[str]
    created_at: datetime
    started_at: datetime | None
    updated_at: datetime
    price_per_hour: str
    cost_so_far: str
    price_minor: int
    cost_minor: int
    volumes: list[str]
    keep_data_on_release: bool
    auto_release_days: int | None
    # Only in the answer to a create or clone that made one: never shown again.
    ssh_password: str | None = field(default=None)


def ssh_command_for(instance: Instance, public_host: str | None) -> str | None:
    if not instance.ssh_port or instance.status == Status.RELEASED:
        return None
    return f"ssh -p {instance.ssh_port} root@{public_host or '127.0.0.1'}"


def ssh_command(db: Session, instance: Instance) -> str | None:
    node = db.get(Node, instance.node_name)
    return ssh_command_for(instance, node.public_host if node else None)


def view(platform: Platform, db: Session, instance: Instance, viewer: User) -> InstanceView:
    return views(platform, db, [instance], viewer)[0]


def view_of(platform: Platform, instance_id: str, viewer: User) -> InstanceView:
    """One instance's view, read in a transaction of its own (after an action's)."""
    with platform.reads.begin() as db:
        return view(platform, db, db.get(Instance, instance_id), viewer)


def owned_view(platform: Platform, user: User, key: str, statuses: set[str] | None = None) -> Instance | InstanceView:
    """The view of `user`'s instance `key` (404 for anyone else's), read in one transaction;
    with `statuses`, only when its status is one of them, else the row alone (cheap to
    read again)."""
    with platform.reads.begin() as db:
        instance = ownership.get_owned(db, Instance, user, key, "instance")
        return instance if statuses is not None and instance.status not in statuses else view(platform, db, instance, user)


def wait_view(platform: Platform, user: User, key: str, statuses: set[str], timeout: float) -> InstanceView:
    """The instance's view once its status is one of `statuses`, or when `timeout` passes."""
    found = platform.wait_until(lambda: owned_view(platform, user, key, statuses),
                                lambda read: isinstance(read, InstanceView), timeout)
    return found if isinstance(found, InstanceView) else owned_view(platform, user, key)


def views(platform: Platform, db: Session, found: list[Instance], viewer: User) -> list[InstanceView]:
    """The views of `found`, in its order. `viewer` sees the values of their own instances'
    environment; an admin looking at another user's sees only the names."""
    if not found:
        return []
    ids = [i.id for i in found]
    owners = dict(db.execute(select(User.id, User.name).where(User.id.in_({i.owner_id for i in found}))).all())
    image_names = dict(db.execute(select(Image.id, Image.name).where(Image.id.in_({i.image_id for i in found}))).all())
    hosts = dict(db.execute(select(Node.name, Node.public_host)
                            .where(Node.name.in_({i.node_name for i in found}))).all())
    gpus: dict[str, list[GpuView]] = defaultdict(list)
    for instance_id, gpu in db.execute(select(GpuAssignment.instance_id, Gpu).distinct()
                                       .join(Gpu, Gpu.id == GpuAssignment.gpu_id)
                                       .where(GpuAssignment.instance_id.in_(ids)).order_by(Gpu.index)):
        gpus[instance_id].append(GpuView(index=gpu.index, uuid=gpu.uuid, model=gpu.model, simulated=gpu.simulated))
    costs = dict(db.execute(select(Posting.instance_id, func.coalesce(func.sum(Posting.amount), 0))
                            .where(Posting.instance_id.in_(ids), Posting.kind.in_(COST_KINDS))
                            .group_by(Posting.instance_id)).all())
    price_rows, now = prices.price_rows(db), prices.to_us(utcnow())
    mounts: dict[str, list[Volume]] = defaultdict(list)
    for volume in db.scalars(select(Volume).where(Volume.instance_id.in_(ids)).order_by(Volume.mount_path)):
        mounts[volume.instance_id].append(volume)
    # Only queued and warned rows need these: one query each, and none when there are none.
    places = (queue_rules.positions(queue.waiters(db)) if any(i.status == Status.QUEUED for i in found) else {})
    warnings = _warnings(db, [i.id for i in found if i.auto_stop_warned_at is not None])
    out = []
    for i in found:
        held = gpus.get(i.id, [])
        price = prices.hourly_price(price_rows, i.gpu_model, i.gpu_milli, i.node_name, i.no_gpu, now)
        cost = int(costs.get(i.id, 0) or 0)
        queued = i.status == Status.QUEUED
        out.append(InstanceView(
            id=i.id, name=i.name, owner=owners.get(i.owner_id, "?"), status=i.status, status_reason=i.status_reason,
            node=i.node_name, image=image_names.get(i.image_id, "?"), gpu_model=i.gpu_model, gpu_count=i.gpu_count,
            gpu_share=i.gpu_share, no_gpu=i.no_gpu, gpus=held,
            env={k: (v if viewer.id == i.owner_id else HIDDEN) for k, v in (i.env or {}).items()},
            secret_env_names=sorted(platform.secret_box.open(i.secret_env)),
            command=i.command, data_disk_gb=i.data_disk_gb, env_check=i.env_check,
            ssh_command=ssh_command_for(i, hosts.get(i.node_name)),
            last_ssh_at=i.last_ssh_at, last_jupyter_at=i.last_jupyter_at,
            auto_stop_idle_minutes=i.auto_stop_idle_minutes, auto_stop_max_minutes=i.auto_stop_max_minutes,
            queue_position=places.get(i.id) if queued else None,
            queued_at=i.queued_at if queued else None, queue_deadline=i.queue_deadline if queued else None,
            auto_stop_gpu_idle_minutes=i.auto_stop_gpu_idle_minutes,
            auto_stop_gpu_idle_percent=i.auto_stop_gpu_idle_percent, auto_stop_at=i.auto_stop_at,
            auto_stop_on_exit=bool(i.auto_stop_on_exit), auto_stop_when_exits=i.auto_stop_when_exits,
            auto_stop_pending=warnings.get(i.id), auto_stop_notes=autostop.notes(i, [g.simulated for g in held]),
            created_at=i.created_at, started_at=i.started_at, updated_at=i.updated_at,
            price_per_hour=core_billing.format_amount(price), cost_so_far=core_billing.format_amount(cost),
            price_minor=price, cost_minor=cost,
            volumes=[f"{v.name}:{v.mount_path}" for v in sorted(mounts.get(i.id, []),
                                                                 key=lambda v: v.mount_path != DATA_MOUNT)],
            keep_data_on_release=i.keep_data_on_release, auto_release_days=i.auto_release_days,
        ))
    return out


def _warnings(db: Session, warned: list[str]) -> dict[str, str]:
    """Each warned row's standing warning (the console's banner): its latest, for all at once."""
    if not warned:
        return {}
    out: dict[str, str] = {}
    for instance_id, cause in db.execute(
            select(InstanceEvent.instance_id, InstanceEvent.cause)
            .where(InstanceEvent.instance_id.in_(warned), InstanceEvent.cause.startswith(autostop.WARNING))
            .order_by(InstanceEvent.id.desc())):
        out.setdefault(instance_id, cause)
    return out
