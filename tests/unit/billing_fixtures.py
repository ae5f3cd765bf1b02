"""A database-only Platform (no Docker) with a node, GPUs, a user and an image, for
driving the billing service directly with chosen times."""

from __future__ import annotations

import atexit
import functools
import secrets
import shutil
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import create_engine

from dockyard.config import Settings
from dockyard.db.migrate import upgrade
from dockyard.db.models import Gpu, GpuAssignment, GpuSlot, Image, Instance, InstanceEvent, Node, User
from dockyard.services.platform import open_platform

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
_homes: list[Path] = []  # removed when the test process ends (property tests make hundreds)


@atexit.register
def _remove_homes() -> None:
    for home in _homes:
        shutil.rmtree(home, ignore_errors=True)


def _home(prefix: str) -> Path:
    _homes.append(Path(tempfile.mkdtemp(prefix=prefix)))
    return _homes[-1]


@functools.cache
def _migrated_sqlite() -> Path:
    """One SQLite file at the newest schema, copied for each platform: migrating each
    from nothing took most of the property tests' time."""
    path = _home("dockyard-schema-") / "dockyard.db"
    engine = create_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


def make_platform(database_url: str | None = None, **settings) -> object:
    home = _home("dockyard-billing-")
    if database_url is None:
        shutil.copyfile(_migrated_sqlite(), home / "dockyard.db")
    url = database_url or f"sqlite:///{home / 'dockyard.db'}"
    values = {"settle_lag_s": 0, **settings}
    platform = open_platform(Settings(home=home, database_url=url, **values))
    with platform.sessions.begin() as db:
        db.add(Node(name="local", url="unix:///x", online=True))
        db.flush()
        for index, model in enumerate(["A100-80GB"] * 4 + ["RTX-4090"] * 2):
            gpu = Gpu(node_name="local", index=index, uuid=f"GPU-{secrets.token_hex(8)}", model=model,
                      memory_mb=1, simulated=True)
            db.add(gpu)
            db.flush()
            db.add(GpuSlot(gpu_id=gpu.id, slot=0))  # whole GPUs: one slot each
        for name in ("alice", "bob"):
            db.add(User(name=name, password_hash="x"))
        db.add(Image(name="debian-12", ref="dockyard/debian:bookworm"))
    return platform


def user(platform, name: str) -> User:
    from sqlalchemy import select

    with platform.sessions.begin() as db:
        found = db.scalars(select(User).where(User.name == name)).one()
        db.expunge(found)
    return found


def add_instance(platform, owner: str, model: str = "A100-80GB", count: int = 1, data_disk_gb: int = 50,
                 created_at: datetime = T0, share: str | None = None, milli: int | None = None) -> str:
    from sqlalchemy import select

    instance_id = secrets.token_hex(6)
    with platform.sessions.begin() as db:
        owner_id = db.scalars(select(User.id).where(User.name == owner)).one()
        image_id = db.scalars(select(Image.id)).first()
        db.add(Instance(id=instance_id, owner_id=owner_id, name=f"i-{instance_id}", node_name="local",
                        image_id=image_id, gpu_model=model, gpu_count=count, status="creating", env={},
                        gpu_share=share, gpu_milli=count * 1000 if milli is None else milli,
                        data_disk_gb=data_disk_gb, created_at=created_at, updated_at=created_at))
        db.flush()
        db.add(InstanceEvent(instance_id=instance_id, at=created_at, from_status=None, to_status="creating", cause="t"))
    return instance_id


def event(platform, instance_id: str, at: datetime, to_status: str, cause: str = "t", no_gpu: bool = False) -> None:
    """An event; a '-> running' one as the driver writes it (its cause and with_gpus)."""
    with platform.sessions.begin() as db:
        instance = db.get(Instance, instance_id)
        with_gpus = None
        if to_status == "running":
            cause = "container started without GPUs" if no_gpu else "container started with GPUs 0"
            instance.no_gpu = no_gpu
            with_gpus = not no_gpu and instance.gpu_count > 0
        db.add(InstanceEvent(instance_id=instance_id, at=at, from_status=instance.status, to_status=to_status,
                             cause=cause, with_gpus=with_gpus))
        instance.status = to_status
        if to_status == "released":
            instance.released_at = at


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def hold_gpu(db, instance_id: str) -> None:
    """Give the instance one free whole GPU."""
    from sqlalchemy import select

    slot = db.scalars(select(GpuSlot).where(GpuSlot.id.not_in(select(GpuAssignment.slot_id)))).first()
    db.add(GpuAssignment(slot_id=slot.id, gpu_id=slot.gpu_id, instance_id=instance_id))
