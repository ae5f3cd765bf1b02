"""What a node's engine holds of an instance (runtimes/instances.Held), as the instance's
row records it: in one column the engine owns. Only this module writes that column; the
rest of the platform reads only whether there is a container (Instance.container_id)."""

from __future__ import annotations

from sqlalchemy import update

from dockyard.db.models import Instance
from dockyard.runtimes.instances import Held, Record
from dockyard.services.platform import Platform


def fields(now: Held) -> dict:
    """The row's columns for what is held."""
    return {"backend_state": now.state()}


# The row's columns when the engine holds nothing of it (released, or made again elsewhere).
NOTHING_HELD = fields(Held())


def held(instance: Instance) -> Held:
    return Held.of(instance.backend_state)


# What a column select needs of the row for `held_of`.
COLUMNS = (Instance.backend_state,)


def held_of(row) -> Held:
    """`held` of a row selected with COLUMNS among its columns."""
    return Held.of(row.backend_state)


def system_disk(instance: Instance) -> str | None:
    """The instance's system disk kept as an image, if its engine keeps one."""
    return held(instance).system_disk


def container_gpus(instance: Instance) -> frozenset[str]:
    """The GPUs its container was made with: placement prefers them (no new container)."""
    return frozenset(held(instance).gpus)


def recorder(platform: Platform, instance: Instance) -> Record:
    """Writes what is held to the row, at once and in a transaction of its own, and keeps
    the caller's copy of the row in step."""
    def record(now: Held) -> None:
        with platform.sessions.begin() as db:
            db.execute(update(Instance).where(Instance.id == instance.id).values(backend_state=now.state()))
        instance.backend_state = now.state()
    return record
