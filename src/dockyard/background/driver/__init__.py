"""Drives each instance's containers toward the status the database records: one step
module per status it drives (starting.py for creating and starting, stopping.py,
releasing.py); this class picks the step, under a lock per instance.

Every step is idempotent and re-reads the database first, so the same code finishes
the job after a crash (the reconciler calls `drive` for every transitional instance).
The threads are background/workers.py's: the driver only submits to them.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from dockyard.background.driver import checks, releasing, starting, stopping
from dockyard.background.driver.context import Context
from dockyard.core.states import Status
from dockyard.db.models import Instance
from dockyard.runtimes.base import ContainerGone, RuntimeError_
from dockyard.services.lifecycle import transition
from dockyard.services.platform import Platform
from dockyard.services.work import Pools

log = logging.getLogger(__name__)

STEPS = {
    Status.CREATING: starting.run,
    Status.STARTING: starting.run,
    Status.STOPPING: stopping.stop,
    Status.RELEASING: releasing.release,
}


class Driver:
    def __init__(self, platform: Platform, pools: Pools):
        self.platform = platform
        self._pool = pools.drive
        # Self-tests run a program of the image: on their own threads, never the driver's.
        self._context = Context(platform, pools.checks)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def kick(self, instance_id: str) -> None:
        """Drive an instance in the background, now."""
        self._pool.submit(self.drive, instance_id)

    def busy(self, instance_id: str) -> bool:
        lock = self._locks.get(instance_id)
        return bool(lock and lock.locked())

    def _lock(self, instance_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(instance_id, threading.Lock())

    def hold(self, instance_id: str) -> threading.Lock:
        """Keep `drive` off an instance about to be made (a clone, until its disks are
        copied): kicks and the reconciler pass it by while held. `drive_prepared` lets go."""
        lock = self._lock(instance_id)
        lock.acquire()
        return lock

    def drive_prepared(self, instance_id: str, lock: threading.Lock, prepare: Callable[[], None]) -> None:
        """Run `prepare` on a held instance (failing it with the reason if that fails),
        then drive it as usual and let go of it."""
        try:
            try:
                prepare()
            except Exception as exc:  # its release removes whatever was half made
                transition(self.platform, instance_id, Status.CREATING, Status.FAILED, str(exc))
        finally:
            self._drive_held(instance_id, lock)

    def drive(self, instance_id: str) -> None:
        lock = self._lock(instance_id)
        if not lock.acquire(blocking=False):
            return  # someone is driving it; they re-read the status when they finish
        self._drive_held(instance_id, lock)

    def check_environment(self, instance_id: str) -> dict | None:
        """Run the image's self-test now, on the caller's thread."""
        return checks.check_environment(self.platform, instance_id)

    def _drive_held(self, instance_id: str, lock: threading.Lock) -> None:
        try:
            for _ in range(10):  # a step may leave it in another transitional status
                with self.platform.reads.begin() as db:
                    instance = db.get(Instance, instance_id)
                    status = Status(instance.status)
                step = STEPS.get(status)
                if step is None:
                    return
                try:
                    step(self._context, instance, status)
                except RuntimeError_ as exc:
                    if not self._fail(instance, status, exc):
                        return  # left as it is: the reconciler's next pass tries again
        except Exception:
            # An engine that cannot be reached: leave the status, the reconciler retries.
            log.exception("driving instance %s failed; will retry", instance_id)
        finally:
            lock.release()

    def _fail(self, instance: Instance, status: Status, error: RuntimeError_) -> bool:
        """Fail the instance, except where failing could leave a container running with
        GPUs handed to someone else: a stop or release that the engine refused is kept
        (with the error as its reason) and retried. Returns whether it failed."""
        log.warning("instance %s: %s failed: %s", instance.id, status, error)
        if status in (Status.STOPPING, Status.RELEASING) and not isinstance(error, ContainerGone):
            with self.platform.sessions.begin() as db:
                db.get(Instance, instance.id).status_reason = f"retrying: {error}"
            return False
        transition(self.platform, instance.id, status, Status.FAILED, str(error))
        return True
