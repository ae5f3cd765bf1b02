"""Monitoring arithmetic: CPU % from counters, memory as `docker stats` counts it, the data
disk's use, the bounded history, and the NVML reader (with NVML faked at its boundary)."""

import threading

import pytest

from dockyard.core.metrics import (
    CpuCounters,
    DiskUsage,
    GpuSample,
    MetricsStore,
    Sample,
    cpu_percent,
    disk_command,
    parse_disk,
)
from dockyard.runtimes.docker import memory_used
from dockyard.runtimes.gpu_metrics import GpuMeter

SECOND = 10**9
GIB = 2**30


def counters(container_s: float, wall_s: float, host_cpus: int = 2, limit: float = 0.5) -> CpuCounters:
    return CpuCounters(container_ns=int(container_s * SECOND), host_ns=int(wall_s * SECOND * host_cpus),
                       host_cpus=host_cpus, limit_cpus=limit)


def test_cpu_percent_is_of_the_quota():
    # Half a CPU used for 10 s by a container allowed half a CPU: all of its share.
    assert cpu_percent(counters(100, 1000), counters(105, 1010)) == 100.0
    assert cpu_percent(counters(100, 1000), counters(101, 1010)) == 20.0


def test_cpu_percent_without_a_quota_is_of_the_host():
    assert cpu_percent(counters(0, 0, host_cpus=4, limit=0), counters(20, 10, host_cpus=4, limit=0)) == 50.0


def test_no_cpu_percent_from_one_reading_or_counters_that_went_back():
    assert cpu_percent(None, counters(5, 10)) is None
    assert cpu_percent(counters(100, 1000), counters(3, 1010)) is None  # the container restarted
    assert cpu_percent(counters(100, 1000), counters(100, 1000)) is None  # no time passed


def test_cpu_percent_never_over_100():
    # Counters read a few ms apart can show a burst over the quota: shown as 100%.
    assert cpu_percent(counters(100, 1000), counters(100.6, 1001)) == 100.0


# cgroup v1 stats of a real container on this build machine (Docker 20.10).
V1_MEMORY = {"usage": 2899968, "limit": 536870912,
             "stats": {"total_inactive_file": 2260992, "inactive_file": 2260992, "rss": 106496}}


def test_memory_used_leaves_out_the_inactive_page_cache():
    assert memory_used(V1_MEMORY) == 2899968 - 2260992
    assert memory_used({"usage": 1000, "stats": {"inactive_file": 300}}) == 700  # cgroup v2 names
    assert memory_used({"usage": 1000, "stats": {}}) == 1000
    assert memory_used({}) == 0  # a container that stopped: no numbers


DF_DU = """/dev/vda         264212084 33921140  72469772      32% /root/data
56872\t/root/data
"""


def test_parse_disk_takes_the_rented_size_or_less_where_the_filesystem_has_less():
    disk = parse_disk(DF_DU, "/root/data", 50 * GIB, at=7.0)
    assert disk == DiskUsage(at=7.0, used=56872 * 1024, total=50 * GIB)
    cramped = parse_disk(DF_DU, "/root/data", 500 * GIB, at=7.0)
    assert cramped.total == (56872 + 72469772) * 1024  # used + what the filesystem still has


def test_parse_disk_ignores_noise_and_refuses_garbage():
    noisy = "du: cannot read directory '/root/data/x': Permission denied\n" + DF_DU
    assert parse_disk(noisy, "/root/data", 50 * GIB, at=1.0).used == 56872 * 1024
    assert parse_disk("sh: 1: df: not found\n", "/root/data", 50 * GIB, at=1.0) is None
    assert parse_disk("", "/root/data", 50 * GIB, at=1.0) is None


def test_disk_command_names_the_mount():
    assert disk_command("/root/data")[-1].count("/root/data") == 2


def sample(at: float) -> Sample:
    return Sample(at=at, cpu_percent=1.0, memory_used=1, memory_limit=2)


def test_the_store_keeps_the_newest_samples_up_to_its_size():
    store = MetricsStore(size=3)
    for at in range(5):
        store.add("a", sample(at))
    samples, disk = store.read("a")
    assert [s.at for s in samples] == [2, 3, 4] and disk is None
    assert store.read("nobody") == ([], None)


def test_the_store_forgets_series_with_nothing_recent():
    store = MetricsStore(size=10)
    store.add("old", sample(100))
    store.add("new", sample(100))
    store.add("new", sample(500))
    store.set_disk("disk-only", DiskUsage(at=450, used=1, total=2))
    store.forget(older_than=400)
    assert store.read("old") == ([], None)
    assert len(store.read("new")[0]) == 2
    assert store.read("disk-only")[1].used == 1


def test_reading_while_the_sampler_writes_is_safe():
    store, done = MetricsStore(size=50), threading.Event()

    def write():
        for at in range(20000):
            store.add("a", sample(at))
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    while not done.is_set():
        samples, _ = store.read("a")
        assert [s.at for s in samples] == sorted(s.at for s in samples) and len(samples) <= 50
    writer.join()


# ---- NVML, faked at the pynvml boundary ------------------------------------------------------


class FakeNvml:
    """The part of pynvml GpuMeter uses: two GPUs of this host, by UUID."""

    class NVMLError(Exception):
        pass

    class Utilization:
        def __init__(self, gpu):
            self.gpu, self.memory = gpu, 0

    class Memory:
        def __init__(self, used, total):
            self.used, self.total, self.free = used, total, total - used

    def __init__(self, present=True):
        self.present, self.calls = present, []
        self.gpus = {"GPU-a": (97, 30 * GIB, 80 * GIB), "GPU-b": (0, 0, 80 * GIB)}

    def nvmlInit(self):
        self.calls.append("init")
        if not self.present:
            raise self.NVMLError("NVML Shared Library Not Found")

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid not in self.gpus:
            raise self.NVMLError("Not Found")
        return uuid

    def nvmlDeviceGetUtilizationRates(self, handle):
        return self.Utilization(self.gpus[handle][0])

    def nvmlDeviceGetMemoryInfo(self, handle):
        return self.Memory(*self.gpus[handle][1:])


def test_gpu_meter_reads_utilisation_and_memory_by_uuid():
    nvml = FakeNvml()
    meter = GpuMeter(nvml)
    found = meter.read(["GPU-a", "GPU-b", "GPU-remote"])
    assert found == {
        "GPU-a": GpuSample(uuid="GPU-a", util_percent=97.0, memory_used=30 * GIB, memory_total=80 * GIB),
        "GPU-b": GpuSample(uuid="GPU-b", util_percent=0.0, memory_used=0, memory_total=80 * GIB),
    }  # a GPU NVML does not know here (another host's) has no sample at all
    meter.read(["GPU-a"])
    meter.close()
    assert nvml.calls == ["init", "shutdown"]  # NVML opened once, not per round


def test_gpu_meter_without_nvml_reads_nothing_and_does_not_retry():
    nvml = FakeNvml(present=False)
    meter = GpuMeter(nvml)
    assert meter.read(["GPU-a"]) == {} and meter.read(["GPU-a"]) == {}
    meter.close()
    assert nvml.calls == ["init"]


def test_gpu_meter_asks_nothing_without_gpus():
    nvml = FakeNvml()
    assert GpuMeter(nvml).read([]) == {} and nvml.calls == []


def test_gpu_meter_on_this_machine_reads_only_what_exists():
    # The real pynvml: on a machine without a GPU it finds nothing; with one, not a fake UUID.
    pytest.importorskip("pynvml")
    assert GpuMeter().read(["GPU-00000000-0000-0000-0000-000000000000"]) == {}
