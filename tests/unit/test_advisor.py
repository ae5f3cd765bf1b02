"""The advisor's rules: each fires on the data it needs, and stays quiet without it."""

from dockyard.core.advisor import TEXT, Facts, advise
from dockyard.core.metrics import DiskUsage, GpuSample, Sample

NOW = 1_800_000_000.0
STEP = 15.0
GIB = 2**30


def series(minutes: float, cpu: float = 10.0, gpu: float | None = None, gpus: int = 1, memory: float = 0.3,
           end: float = NOW) -> list[Sample]:
    """Samples every STEP seconds for `minutes` up to `end`; `gpu` None = no GPU data."""
    count = int(minutes * 60 / STEP) + 1
    return [Sample(at=end - (count - 1 - n) * STEP, cpu_percent=None if n == 0 else cpu,
                   memory_used=int(memory * 8 * GIB), memory_limit=8 * GIB,
                   gpus=tuple(GpuSample(uuid=f"GPU-{g}", util_percent=gpu) for g in range(gpus)))
            for n in range(count)]


def facts(real_gpus: int = 1, **changes) -> Facts:
    return Facts(**{"status": "running", "real_gpus": real_gpus, "interval_s": STEP, "started_at": NOW - 86400,
                    "last_access_at": NOW - 60, **changes})


def rules(found) -> list[str]:
    return [f.rule for f in found]


def test_nothing_to_say_about_a_busy_healthy_instance():
    assert advise(facts(), series(60, cpu=60, gpu=85), DiskUsage(NOW, 10 * GIB, 50 * GIB), NOW) == []


def test_no_data_no_findings():
    assert advise(facts(), [], None, NOW) == []


def test_idle_gpus_for_half_an_hour():
    (finding,) = advise(facts(real_gpus=2), series(31, gpu=1.0, gpus=2), None, NOW)
    assert finding.rule == "gpu_idle" and finding.severity == "warning"
    assert "1%" in finding.message and "2 GPU" in finding.message and "no-GPU mode" in finding.action


def test_idle_gpus_need_the_whole_half_hour():
    assert advise(facts(), series(20, gpu=0.0), None, NOW) == []  # started 20 minutes ago
    gap = series(14, gpu=0.0, end=NOW - 16 * 60) + series(14, gpu=0.0)  # stopped in between
    assert advise(facts(), gap, None, NOW) == []
    stale = series(31, gpu=0.0, end=NOW - 5 * 60)  # nothing sampled for five minutes
    assert advise(facts(), stale, None, NOW) == []


def test_one_busy_gpu_is_not_idle():
    samples = series(31, gpu=0.0, gpus=2)
    samples = [Sample(s.at, s.cpu_percent, s.memory_used, s.memory_limit,
                      (s.gpus[0], GpuSample("GPU-1", 70.0))) for s in samples]
    assert advise(facts(real_gpus=2), samples, None, NOW) == []


def test_simulated_gpus_never_count_as_idle():
    # Simulated GPUs: no utilisation in the samples, and none of them real.
    assert advise(facts(real_gpus=0), series(60, gpu=None), None, NOW) == []
    # Real GPUs NVML cannot read from here (another host's): no data either.
    assert advise(facts(real_gpus=1), series(60, gpu=None), None, NOW) == []


def test_memory_near_the_limit():
    (finding,) = advise(facts(real_gpus=0), series(2, memory=0.95), None, NOW)
    assert finding.rule == "memory_high" and "95%" in finding.message and "8.0 GiB" in finding.message
    assert advise(facts(real_gpus=0), series(2, memory=0.9), None, NOW) == []
    old = series(2, memory=0.95, end=NOW - 600)  # stopped since: nothing to warn about now
    assert advise(facts(real_gpus=0), old, None, NOW) == []
    small = [Sample(at=NOW, cpu_percent=1.0, memory_used=240 * 2**20, memory_limit=256 * 2**20)]
    assert "94% of the 256 MiB limit" in advise(facts(real_gpus=0), small, None, NOW)[0].message


def test_data_disk_nearly_full():
    (finding,) = advise(facts(), [], DiskUsage(NOW, int(46 * GIB), 50 * GIB), NOW)
    assert finding.rule == "disk_full" and "92%" in finding.message and "46.0 GiB of 50.0 GiB" in finding.message
    assert advise(facts(), [], DiskUsage(NOW, 45 * GIB, 50 * GIB), NOW) == []
    assert advise(facts(), [], DiskUsage(NOW, 0, 0), NOW) == []


def test_cpu_bound_with_a_waiting_gpu():
    (finding,) = advise(facts(), series(11, cpu=98, gpu=20), None, NOW)
    assert finding.rule == "cpu_bound" and finding.severity == "info" and "num_workers" in finding.action
    assert advise(facts(), series(11, cpu=98, gpu=90), None, NOW) == []  # the GPU is busy: fine
    assert advise(facts(), series(11, cpu=60, gpu=20), None, NOW) == []  # CPU has room
    assert advise(facts(real_gpus=0), series(11, cpu=98, gpu=None), None, NOW) == []  # no GPU data


def test_nobody_there_for_hours():
    quiet = facts(last_access_at=NOW - 5 * 3600 - 600)
    (finding,) = advise(quiet, series(31, cpu=2, gpu=0.0), None, NOW)[1:]  # after the (warning) gpu_idle
    assert finding.rule == "no_access" and "5 h 10 min" in finding.message and "auto-stop" in finding.action
    # Never accessed: counted from the start.
    never = facts(real_gpus=0, last_access_at=None, started_at=NOW - 4 * 3600)
    assert rules(advise(never, series(31, cpu=2), None, NOW)) == ["no_access"]


def test_nobody_there_is_fine_for_work_running_unattended_or_a_policy_set():
    quiet = dict(last_access_at=NOW - 5 * 3600)
    assert advise(facts(real_gpus=0, **quiet), series(31, cpu=95), None, NOW) == []  # training on CPU
    assert advise(facts(**quiet), series(31, cpu=20, gpu=80), None, NOW) == []  # training on GPU
    assert advise(facts(real_gpus=0, auto_stop_idle=True, **quiet), series(31, cpu=2), None, NOW) == []
    assert advise(facts(real_gpus=0, **quiet), [], None, NOW) == []  # no samples: unknown, so quiet
    assert advise(facts(real_gpus=0, status="stopped", **quiet), series(31, cpu=2), None, NOW) == []
    recent = facts(real_gpus=0, last_access_at=NOW - 3600)
    assert advise(recent, series(31, cpu=2), None, NOW) == []


def test_failed_self_test():
    failed = {"ok": False, "errors": ["1 GPU(s) assigned but torch sees 0"]}
    (finding,) = advise(facts(env_check=failed), [], None, NOW)
    assert finding.rule == "env_check_failed" and "torch sees 0" in finding.message
    broken = {"ok": False, "error": "dockyard-check did not run: exit 127"}
    assert "did not run" in advise(facts(env_check=broken), [], None, NOW)[0].message
    assert advise(facts(env_check={"ok": True, "errors": []}), [], None, NOW) == []


def test_findings_come_most_urgent_first_and_every_rule_has_words():
    found = advise(facts(last_access_at=NOW - 4 * 3600, env_check={"ok": False, "errors": ["x"]}),
                   series(31, cpu=1, gpu=0.0, memory=0.97), DiskUsage(NOW, 49 * GIB, 50 * GIB), NOW)
    assert rules(found)[-1] == "no_access" and set(rules(found)) == {
        "gpu_idle", "memory_high", "disk_full", "no_access", "env_check_failed"}
    assert [f.severity for f in found] == sorted((f.severity for f in found), key=["critical", "warning", "info"].index)
    assert all(f.message and f.action for f in found)
    assert set(TEXT) == {"gpu_idle", "memory_high", "disk_full", "cpu_bound", "no_access", "env_check_failed"}
