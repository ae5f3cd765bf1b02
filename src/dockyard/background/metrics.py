"""The metrics sampler: every `metrics_interval_s`, one reading of each running instance's
container (CPU, memory) and GPUs (NVML, for real GPUs of this host), and every
`metrics_disk_interval_s` its data disk's use and what it wrote to its system disk; at
once, on a node whose container storage loses `disk_pressure_drop_gb` between two rounds.

Kept in memory only, the last `metrics_window_s` per instance: metrics are neither money
nor user data, so a restart that loses them costs the charts their last hour, nothing more.
The database is read in one short transaction per round, never across an engine call; the
engine calls run on two pools of their own (background/workers.py makes them), side by
side (each takes about a second).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import select

from dockyard.background.loop import Loop
from dockyard.core.metrics import (CpuCounters, DiskUsage, GpuSample, MetricsStore, Sample, cpu_percent, disk_command,
                                   parse_disk)
from dockyard.core.states import Status
from dockyard.db.models import Gpu, GpuAssignment, Instance
from dockyard.runtimes.base import Feature
from dockyard.runtimes.gpu_metrics import GpuMeter
from dockyard.runtimes.instances import Held
from dockyard.services.held import COLUMNS as held_columns, held_of
from dockyard.services.platform import Platform
from dockyard.services.volumes import DATA_MOUNT

log = logging.getLogger(__name__)
STATS_THREADS = 16  # containers read at once: a round of N takes about N / 16 seconds
DISK_THREADS = 2  # du on a large data disk can take a while; it never holds up a round
GIB = 1024**3


@dataclass
class Target:
    instance_id: str
    node: str
    held: Held
    data_disk_gb: int
    gpus: list[tuple[str, bool]]  # (uuid, simulated), in index order


def running_targets(platform: Platform) -> list[Target]:
    with platform.sessions.begin() as db:
        targets = {row.id: Target(row.id, row.node_name, held_of(row), row.data_disk_gb, []) for row in db.execute(
            select(Instance.id, Instance.node_name, *held_columns, Instance.data_disk_gb)
            .where(Instance.status == Status.RUNNING, Instance.container_id.is_not(None)))}
        if targets:
            for instance_id, uuid, simulated, _index in db.execute(
                    select(GpuAssignment.instance_id, Gpu.uuid, Gpu.simulated, Gpu.index).distinct()
                    .join(Gpu, Gpu.id == GpuAssignment.gpu_id)
                    .where(GpuAssignment.instance_id.in_(list(targets))).order_by(Gpu.index)):
                targets[instance_id].gpus.append((uuid, simulated))
    return list(targets.values())


class MetricsSampler(Loop):
    name = "metrics"

    def __init__(self, platform: Platform, stats_pool: Executor, disk_pool: Executor, meter: GpuMeter | None = None):
        super().__init__(platform.settings.metrics_interval_s)
        settings = platform.settings
        self.platform = platform
        self.window_s = settings.metrics_window_s
        self.store = MetricsStore(size=int(self.window_s / self.interval_s) + 1)
        self._meter = meter or GpuMeter()
        # background/workers.py's (STATS_THREADS, DISK_THREADS): it drains them after this loop stops.
        self._stats_pool, self._disk_pool = stats_pool, disk_pool
        self._counters: dict[str, tuple[str, CpuCounters]] = {}  # instance -> (container, last reading)
        self._disk_due: dict[str, float] = {}  # instance -> monotonic time of its next disk reading
        self._free_seen: dict[str, int] = {}  # node -> its container storage's free bytes, as last compared
        self._again: set[str] = set()  # instances to measure again as soon as their reading ends
        self.over_limit: Callable[[], None] = lambda: None  # told of a system disk read past its limit
        self._due_lock = threading.Lock()  # _disk_due and _again, between this loop and the disk pool
        self._next_round = time.monotonic()

    def run_once(self) -> None:
        self.sample_once()

    def wait(self) -> None:
        self._next_round = max(self._next_round + self.interval_s, time.monotonic())  # no drift
        self._stop.wait(self._next_round - time.monotonic())

    def finish(self) -> None:
        self._meter.close()

    def sample_once(self) -> None:
        targets = running_targets(self.platform)
        running = {t.instance_id for t in targets}
        # A stopped instance's counters restart with its container: forget the old reading.
        for instance_id in set(self._counters) - running:
            del self._counters[instance_id]
        for instance_id in set(self._disk_due) - running:
            with self._due_lock:
                self._disk_due.pop(instance_id, None)
                self._again.discard(instance_id)
            self.store.set_system_disk(instance_id, None)  # a start may bring another container
        gpus = self._meter.read([uuid for t in targets for uuid, simulated in t.gpus if not simulated])
        list(self._stats_pool.map(lambda t: self._sample(t, gpus), targets))
        now = time.monotonic()
        for node, inside in {t.node: t.held.container_id for t in targets}.items():
            if self._filling(node, inside):
                with self._due_lock:
                    for target in targets:
                        if target.node != node or target.instance_id not in self._disk_due:
                            continue  # its first reading is due anyway
                        if self._disk_due[target.instance_id] == float("inf"):
                            self._again.add(target.instance_id)  # a reading under way may predate the writes
                        else:
                            self._disk_due[target.instance_id] = now
        for target in targets:
            with self._due_lock:
                due = self._disk_due.get(target.instance_id, 0.0) <= now
                if due:
                    self._disk_due[target.instance_id] = float("inf")  # one reading at a time
            if due:
                self._disk_pool.submit(self._measure_disk, target)
        self.store.forget(older_than=time.time() - self.window_s)

    def _filling(self, node: str, inside: str) -> bool:
        """Whether the node's container storage lost `disk_pressure_drop_gb` since it was last
        compared, on a node whose engine does not hold system disks to their size itself:
        someone writes fast, and the measured limit must not wait for its turn to catch them."""
        if not self.platform.settings.system_disk_gb:
            return False  # no limit to hold: no reading (on a remote node, an exec) is worth it
        try:
            runtime = self.platform.runtime(node)
            if runtime.lacks(Feature.SYSTEM_DISK_LIMIT) is None:
                return False
            free = runtime.storage_free(inside)  # `inside`: one of its running containers
        except Exception as exc:  # not connected, or not answering: the reconciler says so
            log.debug("no free space reading for node %s: %s", node, exc)
            return False
        if free is None:
            return False
        before = self._free_seen.get(node)
        dropped = before is not None and before - free >= self.platform.settings.disk_pressure_drop_gb * GIB
        if before is None or dropped or free > before:  # a new level after a drop or a clean-up
            self._free_seen[node] = free
        return dropped

    def _sample(self, target: Target, gpus: dict[str, GpuSample]) -> None:
        try:
            stats = self.platform.instances(target.node).stats(target.held)
        except Exception as exc:  # an engine down or slow: the reconciler reports it, this only skips
            log.debug("no stats for %s: %s", target.instance_id, exc)
            return
        if stats is None:
            return
        previous = self._counters.get(target.instance_id)
        self._counters[target.instance_id] = (target.held.container_id, stats.cpu)
        earlier = previous[1] if previous and previous[0] == target.held.container_id else None
        self.store.add(target.instance_id, Sample(
            at=time.time(), cpu_percent=cpu_percent(earlier, stats.cpu), memory_used=stats.memory_used,
            memory_limit=stats.memory_limit,
            gpus=tuple(gpus.get(uuid) or GpuSample(uuid=uuid, util_percent=None) for uuid, _ in target.gpus)))

    def _measure_disk(self, target: Target) -> None:
        engine = self.platform.instances(target.node)
        try:
            _, output = engine.tool(target.held, disk_command(DATA_MOUNT), timeout_s=90, max_bytes=64 * 1024)
            disk = parse_disk(output.decode(errors="replace"), DATA_MOUNT, target.data_disk_gb * GIB, time.time())
            if disk:
                self.store.set_disk(target.instance_id, disk)
        except Exception as exc:
            log.debug("no disk reading for %s: %s", target.instance_id, exc)
        try:
            used = engine.system_disk_used(target.held)
            if used is not None:
                limit = self.platform.settings.system_disk_gb * GIB
                self.store.set_system_disk(target.instance_id, DiskUsage(at=time.time(), used=used, total=limit))
                if limit and used > limit:
                    self.over_limit()
        except Exception as exc:
            log.debug("no system disk reading for %s: %s", target.instance_id, exc)
        finally:
            with self._due_lock:
                if target.instance_id in self._disk_due:
                    again = target.instance_id in self._again
                    self._again.discard(target.instance_id)
                    wait = 0.0 if again else self.platform.settings.metrics_disk_interval_s
                    self._disk_due[target.instance_id] = time.monotonic() + wait
