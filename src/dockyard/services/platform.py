"""The objects one running Dockyard shares: settings, database, runtimes, deployment id."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dockyard.config import Settings
from dockyard.core.catalog import CatalogEntry
from dockyard.core.errors import Conflict, NotFound
from dockyard.db import migrate
from dockyard.db.models import Meta
from dockyard.db.session import insert_unique, make_engine, make_read_session_factory, make_session_factory
from dockyard.runtimes.base import Feature, Runtime
from dockyard.runtimes.instances import ContainerInstances
from dockyard.services.fair_share import FairShare
from dockyard.services.operations import Operations
from dockyard.services.secret_env import SecretBox
from dockyard.services.work import Pools


T = TypeVar("T")


@dataclass
class Platform:
    settings: Settings
    sessions: sessionmaker[Session]
    deployment: str
    runtimes: dict[str, Runtime] = field(default_factory=dict)
    catalog: dict[str, CatalogEntry] = field(default_factory=dict)
    # Notified after every instance status change, so waiters wake at once; the
    # generation tells a waiter whether a change came while it was reading.
    changed: threading.Condition = field(default_factory=threading.Condition)
    generation: int = 0
    # Saves, clones, builds and pulls in progress (the console's progress bars).
    operations: Operations = field(default_factory=Operations)
    # Bumped when access is taken away (a port closed or unshared, a session or token
    # ended), so the access paths forget what they remembered at once.
    access_generation: int = 0
    # Set whenever GPUs are returned: wakes the start queue's dispatcher (services/queue.py).
    gpus_freed: threading.Event = field(default_factory=threading.Event)
    # Sessions that only read (DEFERRED on SQLite: no write lock); default: `sessions`.
    reads: sessionmaker[Session] | None = None
    # Per-user caps on long requests (waits, log follows, execs).
    fair_share: FairShare | None = None
    # Seals the environment values marked secret (key in $DOCKYARD_HOME).
    secret_box: SecretBox | None = None
    # The background's thread pools, handed over by background/workers.py (their owner).
    pools: Pools | None = None

    def __post_init__(self) -> None:
        if self.reads is None:
            self.reads = self.sessions
        if self.fair_share is None:
            self.fair_share = FairShare(self.settings)
        if self.secret_box is None:
            self.secret_box = SecretBox(self.settings.home)

    def runtime(self, node: str) -> Runtime:
        try:
            return self.runtimes[node]
        except KeyError:
            raise NotFound(f"node {node!r} is not connected") from None

    def instances(self, node: str) -> ContainerInstances:
        """The lifecycle of instances on `node`'s engine."""
        settings = self.settings
        return ContainerInstances(self.runtime(node), self.labels, f"dy-{self.deployment}-sysdisk",
                                  settings.stop_timeout_s, settings.max_sysdisk_layers)

    def lacks(self, node: str, feature: Feature) -> str | None:
        """Why `node`'s backend cannot do `feature`, or None. A node not connected lacks
        nothing here: the caller's own check says it is offline."""
        runtime = self.runtimes.get(node)
        return runtime.lacks(feature) if runtime else None

    def refuse_lacking(self, node: str, feature: Feature, what: str, field: str | None = None) -> None:
        """Refuse `what` ("instance a cannot be cloned") when `node` lacks `feature`: one
        Conflict, naming the ability and the backend's reason, before anything is recorded."""
        why = self.lacks(node, feature)
        if why:
            raise Conflict(f"{what}: {why} (no {feature})", field=field)

    def notify_changed(self) -> None:
        with self.changed:
            self.generation += 1
            self.changed.notify_all()

    def wait_until(self, read: Callable[[], T], done: Callable[[T], bool], timeout: float) -> T:
        """`read()` again after every change of state until `done` holds for what it
        returned or `timeout` passes (at least once a second, for changes no one
        announces); the last reading."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.generation
            value = read()
            left = deadline - time.monotonic()
            if done(value) or left <= 0:
                return value
            with self.changed:
                if self.generation == seen:  # else a change came while we read: look again
                    self.changed.wait(min(left, 1.0))

    def access_revoked(self) -> None:
        self.access_generation += 1

    @property
    def labels(self) -> dict[str, str]:
        """Labels on every engine object this installation owns (and only those)."""
        return {"dockyard.deployment": self.deployment}


def open_platform(settings: Settings) -> Platform:
    """Connect to the database, apply migrations, and read (or make) the deployment id."""
    settings.home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    sessions = make_session_factory(engine)
    return Platform(settings=settings, sessions=sessions, deployment=_deployment_id(sessions),
                    reads=make_read_session_factory(engine))


def _deployment_id(sessions: sessionmaker[Session]) -> str:
    with sessions.begin() as db:
        row = db.get(Meta, "deployment")
        if row:
            return row.value
    with sessions.begin() as db:
        insert_unique(db, Meta(key="deployment", value=secrets.token_hex(4)), None)  # or another process's
        return db.scalars(select(Meta.value).where(Meta.key == "deployment")).one()
