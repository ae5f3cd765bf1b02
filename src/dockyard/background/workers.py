"""The one owner of the server's background work: every thread pool it runs work on and
every loop. `api/app.py` builds it, starts it and stops it; nothing else makes a pool
for this work (tests/unit/test_architecture.py checks), so a stop reaches all of it.

Stopping goes in an order that keeps every piece of work able to finish: the listener
and the loops first (they only hand work out), then each pool after the pools that hand
work to it (a clone's copy drives its clone and starts its self-test; a migration's copy
submits its source checks). A pool's queued work is cancelled where a later pass redoes
it (drives, self-tests, metrics readings) and kept where nothing would (a clone's or a
migration's copy holds its instance until it ends; a build, a pull). What still runs is
waited for, all pools together, up to `drain_s`; past that `stop` logs what is left and
returns (Python still joins a pool's threads at exit), and the reconciler finishes or
rolls back what a stop or a crash left at the next start.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait

from dockyard.access import inside
from dockyard.background.activity import ActivityWatch
from dockyard.background.autorelease import AutoRelease
from dockyard.background.autostop import AutoStop
from dockyard.background.dispatcher import Dispatcher
from dockyard.background.driver import Driver
from dockyard.background.liveness import NodeWatch
from dockyard.background.metering import Metering
from dockyard.background.metrics import DISK_THREADS, STATS_THREADS, MetricsSampler
from dockyard.background.reconciler import Reconciler
from dockyard.services.platform import Platform
from dockyard.services.work import Pools

log = logging.getLogger(__name__)
DRAIN_S = 30.0
CHECK_THREADS = 4  # self-tests at once
COPY_THREADS = 4  # clones' and migrations' copies at once
TRANSFER_THREADS = 8
PREPARE_THREADS = 8  # builds and pulls at once (each node's image lock orders them further)


class Pool(ThreadPoolExecutor):
    """A thread pool that knows its unfinished work, so that a drain waits for it with a
    bound (ThreadPoolExecutor.shutdown waits without one)."""

    def __init__(self, workers: int, name: str, cancel_queued: bool):
        super().__init__(max_workers=workers, thread_name_prefix=name)
        self.name, self.cancel_queued = name, cancel_queued
        self._unfinished: set[Future] = set()
        self._guard = threading.Lock()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future = super().submit(fn, *args, **kwargs)
        with self._guard:
            self._unfinished.add(future)
        future.add_done_callback(self._done)  # at once if it is done already
        return future

    def _done(self, future: Future) -> None:
        with self._guard:
            self._unfinished.discard(future)

    def unfinished(self) -> set[Future]:
        with self._guard:
            return set(self._unfinished)


class Workers:
    def __init__(self, platform: Platform, drain_s: float = DRAIN_S):
        settings = platform.settings
        self.platform, self.drain_s = platform, drain_s
        copies = Pool(COPY_THREADS, "clone", cancel_queued=False)
        prepares = Pool(PREPARE_THREADS, "prepare", cancel_queued=False)
        drive = Pool(settings.workers, "drive", cancel_queued=True)
        transfers = Pool(TRANSFER_THREADS, "migrate-io", cancel_queued=False)
        checks = Pool(CHECK_THREADS, "check", cancel_queued=True)
        metrics = Pool(STATS_THREADS, "metrics", cancel_queued=True)
        metrics_disk = Pool(DISK_THREADS, "metrics-disk", cancel_queued=True)
        # The order they drain in: each after every pool that submits to it.
        self.pool_order: list[Pool] = [copies, prepares, drive, transfers, checks, metrics, metrics_disk]
        self.pools = Pools(drive=drive, checks=checks, copies=copies, transfers=transfers, prepares=prepares,
                           metrics=metrics, metrics_disk=metrics_disk)
        platform.pools = self.pools  # the services submit to them through the platform
        self.driver = Driver(platform, self.pools)
        self.metrics = MetricsSampler(platform, metrics, metrics_disk)  # monitoring samples, in memory
        store = self.metrics.store
        # Stops instances by their auto-stop policy; GPU idle time from the sampler's readings,
        # and a pass at once when the sampler reads a system disk past its limit.
        autostop = AutoStop(platform, self.driver, lambda instance_id: store.read(instance_id)[0],
                            store.read_system_disk)
        self.metrics.over_limit = autostop.wake
        self.loops = [
            Reconciler(platform, self.driver),  # its first pass, at once, heals whatever a crash left
            NodeWatch(platform, self.driver),  # nodes that vanish and return
            Metering(platform, self.driver),  # settles usage at least every minute
            ActivityWatch(platform, settings.activity_interval_s),
            self.metrics,
            autostop,
            Dispatcher(platform, self.driver),  # starts queued instances when their GPUs are free
            AutoRelease(platform, self.driver),  # releases instances left stopped, keeping their data
        ]
        self._listener = None
        self._stopped = False
        self._guard = threading.Lock()

    def start(self) -> None:
        for loop in self.loops:
            loop.start()
        self._listener = inside.start(self.platform, self.driver)  # dockyard-shutdown's, for instances only

    def stop(self) -> list[str]:
        """Stop the listener and the loops, then drain the pools; the names of the pools
        left with work still running past the bound. A second call does nothing."""
        with self._guard:
            if self._stopped:
                return []
            self._stopped = True
        deadline = time.monotonic() + self.drain_s
        if self._listener:
            self._listener.stop()
        for loop in self.loops:
            loop.stop()
        for loop in self.loops:  # a pass in progress may still hand out work: let it end first
            loop.join(max(0.0, deadline - time.monotonic()))
        for pool in self.pool_order:  # at once, not at their turn: none of it starts meanwhile
            if pool.cancel_queued:
                for future in pool.unfinished():
                    future.cancel()  # only those not running yet
        left = []
        for pool in self.pool_order:
            pool.shutdown(wait=False, cancel_futures=pool.cancel_queued)
            running = wait(pool.unfinished(), timeout=max(0.0, deadline - time.monotonic())).not_done
            if running:
                log.warning("stopping with %d task(s) of the %s pool still running", len(running), pool.name)
                left.append(pool.name)
        return left
