"""What the unit tests on the in-memory runtime share: a platform of one fake node with
the catalog's images on it, the driver's pools without its loops, and small readers of
the database that poll with a deadline."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dockyard.config import Settings
from dockyard.db.models import GpuAssignment, Instance, User
from dockyard.background.workers import Workers
from dockyard.services import images as image_service
from dockyard.services import instances
from dockyard.services.nodes import connect_nodes
from dockyard.services.platform import Platform, open_platform
from tests.unit.billing_fixtures import _migrated_sqlite

IMAGE = "pytorch-2.13-cpu"


def open_fake(home: Path, admin: bool = False, **settings) -> Platform:
    """A platform of in-memory nodes, its database copied at the newest schema (migrating
    from nothing took most of a test's time), its catalog loaded and user ann made."""
    shutil.copyfile(_migrated_sqlite(), home / "dockyard.db")
    made = open_platform(Settings(home=home, runtime="fake", billing_enabled=False, stop_timeout_s=1, **settings))
    image_service.load_catalog(made)
    connect_nodes(made)
    with made.sessions.begin() as db:
        db.add(User(name="ann", password_hash="x", is_admin=admin))
    return made


@pytest.fixture
def platform(tmp_path):
    made = open_fake(tmp_path)
    image_service.refresh_cache(made)
    return made


@pytest.fixture
def driver(platform):
    owner = Workers(platform, drain_s=5)  # its pools; its loops are not started
    yield owner.driver
    owner.stop()


@pytest.fixture
def fake(platform):
    return platform.runtimes["local"]


def ann(platform) -> User:
    with platform.sessions.begin() as db:
        user = db.scalars(select(User).where(User.name == "ann")).one()
        db.expunge(user)
        return user


def row(platform, instance_id: str) -> Instance:
    with platform.sessions.begin() as db:
        found = db.get(Instance, instance_id)
        db.expunge(found)
        return found


def settle(platform, instance_id: str, *statuses: str, timeout: float = 10) -> Instance:
    deadline = time.monotonic() + timeout
    while (found := row(platform, instance_id)).status not in statuses:
        assert time.monotonic() < deadline, f"still {found.status} ({found.status_reason})"
        time.sleep(0.02)
    return found


def until(check, what: str, timeout: float = 10):
    """Poll `check()` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while not (seen := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return seen


def create(platform, driver, gpu_count: int = 1) -> str:
    instance = instances.create_instance(platform, ann(platform), instances.CreateRequest(
        image=IMAGE, gpu_model="A100-80GB", gpu_count=gpu_count))
    driver.kick(instance.id)
    return instance.id


def gpus_held(platform, instance_id: str | None = None) -> int:
    """GPU slots assigned (to one instance, or to any)."""
    query = select(func.count()).select_from(GpuAssignment)
    if instance_id is not None:
        query = query.where(GpuAssignment.instance_id == instance_id)
    with platform.sessions.begin() as db:
        return db.scalar(query)


def causes(platform, instance_id: str) -> list[str]:
    with platform.sessions.begin() as db:
        return [e.cause for e in instances.events(db, instance_id)]


def settle_idle(platform, driver, instance_id: str, *statuses: str) -> Instance:
    """`settle`, then wait for the driver to let go of it (it drops old system disks
    after the transition): a reconciler pass passes a busy instance by."""
    settle(platform, instance_id, *statuses)
    until(lambda: not driver.busy(instance_id), "the driver to let go")
    return row(platform, instance_id)
