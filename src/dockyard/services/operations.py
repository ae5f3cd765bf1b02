"""Long operations in progress (saves, clones, image builds and pulls, volume resizes): one registry in
the server's memory, which the console shows live over /events and the API answers from.
What an operation makes (an image, an instance) is in the database as before; this holds
only how far it got, so a restart forgets it (the rows then say where things stand)."""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from dockyard.core.errors import NotFound
from dockyard.core.progress import percent_of
from dockyard.db.models import User, utcnow

KEEP_FINISHED_S = 600  # answered by the API this long after the end
RECENT_S = 15  # and shown on a page opened this long after the end
LOG_LINES = 12


@dataclass
class Operation:
    id: str
    kind: str  # save, clone, build, pull, resize
    target: str  # what it makes: an image or an instance
    owner_id: int
    admins: bool  # every admin sees it (image builds and pulls)
    registry: "Operations" = field(repr=False)
    phase: str = ""
    percent: float | None = None
    lines: deque = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    instance_id: str | None = None  # a clone's new instance
    error: str | None = None
    done: bool = False
    version: int = 0
    started_at: str = field(default_factory=lambda: utcnow().isoformat())
    finished: float | None = None  # time.monotonic() at the end

    def update(self, phase: str | None = None, percent: float | None = None, line: str | None = None) -> None:
        """A new phase (with the percentage it starts at), or a line of output (whose
        own percentage, if it reports one, moves the bar)."""
        with self.registry.lock:
            if phase is not None:
                self.phase = phase
            if line is not None:
                self.lines.append(line[:300])
                percent = percent_of(line) if percent is None else percent
            if percent is not None:
                self.percent = round(percent, 1)
            self.registry.touch(self)

    def finish(self, error: str | None = None) -> None:
        with self.registry.lock:
            self.done, self.error, self.finished = True, error, time.monotonic()
            if error is None:
                self.phase, self.percent = "done", 100.0
            self.registry.touch(self)

    def view(self) -> dict:
        with self.registry.lock:
            return {"id": self.id, "kind": self.kind, "target": self.target, "phase": self.phase,
                    "percent": self.percent, "lines": list(self.lines), "instance_id": self.instance_id,
                    "done": self.done, "error": self.error, "started_at": self.started_at, "version": self.version}


class Operations:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.version = 0
        self._ops: dict[str, Operation] = {}

    def start(self, kind: str, target: str, owner: User, admins: bool = False, phase: str = "starting",
              instance_id: str | None = None) -> Operation:
        with self.lock:
            self._prune()
            op = Operation(id=secrets.token_hex(6), kind=kind, target=target, owner_id=owner.id, admins=admins,
                           registry=self, phase=phase, instance_id=instance_id)
            self._ops[op.id] = op
            self.touch(op)
            return op

    def in_progress(self, kind: str, target: str, owner_id: int) -> bool:
        """Whether an operation of `kind` on the owner's `target` is running in this process."""
        with self.lock:
            return any((op.kind, op.target, op.owner_id) == (kind, target, owner_id) and not op.done
                       for op in self._ops.values())

    def touch(self, op: Operation) -> None:
        self.version += 1
        op.version = self.version

    def _prune(self) -> None:
        old = [k for k, op in self._ops.items() if op.finished and time.monotonic() - op.finished > KEEP_FINISHED_S]
        for key in old:
            del self._ops[key]

    @staticmethod
    def _visible(op: Operation, user: User) -> bool:
        return op.owner_id == user.id or (op.admins and user.is_admin)

    def listed(self, user: User) -> list[Operation]:
        with self.lock:
            self._prune()
            return [op for op in self._ops.values() if self._visible(op, user)]

    def get(self, user: User, op_id: str) -> Operation:
        with self.lock:
            op = self._ops.get(op_id)
            if op is None or not self._visible(op, user):
                raise NotFound(f"operation {op_id!r} not found")
            return op

    def changes(self, user: User, since: int | None) -> tuple[int, list[dict]]:
        """The views of the user's operations changed after version `since`; with None,
        those running or just ended (what a page opened now shows)."""
        with self.lock:
            version = self.version
            if since is None:
                found = [op for op in self.listed(user)
                         if not op.done or time.monotonic() - op.finished < RECENT_S]
            else:
                found = [op for op in self.listed(user) if op.version > since] if version != since else []
        return version, [op.view() for op in found]
