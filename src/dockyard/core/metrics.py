"""Monitoring samples and the arithmetic on them: CPU % from cumulative counters, the
data disk's use from `df`/`du` output, and a bounded per-instance history."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CpuCounters:
    """What an engine reports at one moment: cumulative CPU time of the container and of
    the whole host (both in ns, from the same reading), and the CPUs it may use."""

    container_ns: int
    host_ns: int
    host_cpus: int
    limit_cpus: float  # its quota; 0 = none (it may use every host CPU)


def cpu_percent(previous: CpuCounters | None, current: CpuCounters) -> float | None:
    """CPU use between two readings as % of the container's quota (or of the host's CPUs
    without one); None for a first reading or counters that went back (a restart)."""
    if previous is None:
        return None
    used, elapsed = current.container_ns - previous.container_ns, current.host_ns - previous.host_ns
    if used < 0 or elapsed <= 0:
        return None
    # host_ns advances by host_cpus ns per ns of wall time.
    cpus_used = used / elapsed * current.host_cpus
    share = current.limit_cpus or current.host_cpus
    return round(min(cpus_used / share * 100, 100.0), 1)


@dataclass(frozen=True)
class GpuSample:
    uuid: str
    util_percent: float | None  # None: no data (simulated, or not readable from here)
    memory_used: int | None = None
    memory_total: int | None = None


@dataclass(frozen=True)
class Sample:
    at: float  # Unix time
    cpu_percent: float | None
    memory_used: int
    memory_limit: int
    gpus: tuple[GpuSample, ...] = ()


@dataclass(frozen=True)
class DiskUsage:
    at: float
    used: int  # bytes the data disk holds
    total: int  # bytes it may hold: its rented size, or less where the filesystem has less free


def disk_command(mount: str) -> list[str]:
    """Run by the platform's busybox sh in the container every few minutes (du walks the
    files): the free space of the filesystem under the data disk (df), then what the data
    disk holds (du), in KiB. Each under a time limit: a container that hangs them must not
    hold the sampler's threads."""
    # Every mount's line: busybox's `df PATH` names the first mount of PATH's device.
    return ["sh", "-c", f"timeout 10 df -kP | grep ' {mount}$'; timeout 60 ionice -c 3 du -sxk {mount} 2>/dev/null"]


def parse_disk(output: str, mount: str, rented_bytes: int, at: float) -> DiskUsage | None:
    """disk_command's output -> the data disk's use; None where it did not run through."""
    df = [f for f in (line.split() for line in output.splitlines()) if len(f) >= 6 and f[-1] == mount]
    du = [f for f in (line.split() for line in output.splitlines()) if len(f) == 2 and f[1] == mount]
    try:
        available = int(df[-1][3]) * 1024  # df -P: filesystem, blocks, used, available, capacity, mount
        used = int(du[-1][0]) * 1024
    except (IndexError, ValueError):
        return None
    total = min(rented_bytes, used + available) if rented_bytes else used + available
    return DiskUsage(at=at, used=used, total=total)


@dataclass
class Series:
    """One instance's recent samples, oldest first, at most `size`; older ones fall off."""

    size: int
    samples: deque = field(init=False)
    disk: DiskUsage | None = None
    system_disk: DiskUsage | None = None  # its container's own layer, against system_disk_gb

    def __post_init__(self) -> None:
        self.samples = deque(maxlen=self.size)


class MetricsStore:
    """Every instance's Series, shared by the sampler (writes) and requests (reads)."""

    def __init__(self, size: int):
        self.size = size
        self._series: dict[str, Series] = {}
        self._lock = threading.Lock()

    def add(self, instance_id: str, sample: Sample) -> None:
        with self._lock:
            self._series.setdefault(instance_id, Series(self.size)).samples.append(sample)

    def set_disk(self, instance_id: str, disk: DiskUsage) -> None:
        with self._lock:
            self._series.setdefault(instance_id, Series(self.size)).disk = disk

    def set_system_disk(self, instance_id: str, disk: DiskUsage | None) -> None:
        with self._lock:
            self._series.setdefault(instance_id, Series(self.size)).system_disk = disk

    def read_system_disk(self, instance_id: str) -> DiskUsage | None:
        with self._lock:
            series = self._series.get(instance_id)
            return series.system_disk if series else None

    def read(self, instance_id: str) -> tuple[list[Sample], DiskUsage | None]:
        """A copy: the samples, oldest first, and the last disk reading."""
        with self._lock:
            series = self._series.get(instance_id)
            return (list(series.samples), series.disk) if series else ([], None)

    def forget(self, older_than: float) -> None:
        """Drop the series with nothing newer than `older_than` (released, or long stopped)."""
        with self._lock:
            for instance_id, series in list(self._series.items()):
                last = max(series.samples[-1].at if series.samples else 0.0, series.disk.at if series.disk else 0.0)
                if last < older_than:
                    del self._series[instance_id]
