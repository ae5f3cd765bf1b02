"""The advisor: findings about one instance from its recent samples and its record.

Pure rules. Each fires only on data that exists: without samples covering its whole
window (too new, stopped in between, simulated GPUs with no utilisation) it stays quiet.
Thresholds are documented in docs/console.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dockyard.core.metrics import DiskUsage, Sample

SEVERITIES = ("critical", "warning", "info")  # most urgent first

GPU_IDLE_PERCENT, GPU_IDLE_S = 5.0, 30 * 60
MEMORY_HIGH = 0.90
DISK_FULL = 0.90
CPU_BOUND_PERCENT, CPU_BOUND_GPU_PERCENT, CPU_BOUND_S = 90.0, 50.0, 10 * 60
NO_ACCESS_S = 3 * 3600
BUSY_CPU_PERCENT = 50.0  # an instance this busy, with nobody logged in, is working unattended

# English, the API's language; the console's translations are keyed "advisor.<rule>"
# and "advisor.<rule>.action" with the same {placeholders}.
TEXT = {
    "gpu_idle": ("GPU utilisation has averaged {util}% over the last {minutes} minutes while holding {gpus} GPU(s).",
                 "Stop the instance, or start it without GPUs (no-GPU mode) to work on its files cheaply."),
    "memory_high": ("Memory use is at {percent}% of the {limit} limit: at 100% the kernel kills a process "
                    "(OOM).",
                    "Lower the batch size or the number of DataLoader workers, or rent more GPUs: each brings "
                    "its share of memory."),
    "disk_full": ("The data disk (/root/data) is {percent}% full: {used} of {total}.",
                  "Delete what you no longer need or copy results off the instance: writes fail once it is full."),
    "cpu_bound": ("The CPU share is {cpu}% busy while the GPUs average {util}% over the last {minutes} minutes: "
                  "the input pipeline is the bottleneck.",
                  "Raise the DataLoader's num_workers (up to `nproc`), set pin_memory=True, and move heavy "
                  "decoding or augmentation out of the training loop."),
    "no_access": ("Running with no SSH or JupyterLab session for {idle}, and little work being done.",
                  "Stop it when you are done, or set an auto-stop policy so that it stops by itself when idle."),
    "env_check_failed": ("The environment self-test failed: {error}",
                         "Read the self-test result below; run it again after a fix, or recreate the instance "
                         "from a catalog image."),
}


@dataclass(frozen=True)
class Facts:
    """What the advisor knows of the instance besides its samples (times are Unix times)."""

    status: str
    real_gpus: int  # real GPUs it holds now (simulated ones have no utilisation)
    interval_s: float  # the sampler's interval
    started_at: float | None = None
    last_access_at: float | None = None  # the later of the last SSH and JupyterLab use
    auto_stop_idle: bool = False  # an idle auto-stop policy is set already
    env_check: dict | None = None


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def message(self) -> str:
        return TEXT[self.rule][0].format(**self.params)

    @property
    def action(self) -> str:
        return TEXT[self.rule][1].format(**self.params)


def advise(facts: Facts, samples: list[Sample], disk: DiskUsage | None, now: float) -> list[Finding]:
    """Every finding that applies, most urgent first."""
    found = [f for f in (_gpu_idle(facts, samples, now), _memory_high(facts, samples, now), _disk_full(disk),
                         _cpu_bound(facts, samples, now), _no_access(facts, samples, now), _env_check(facts)) if f]
    return sorted(found, key=lambda f: SEVERITIES.index(f.severity))


# ---- the rules -----------------------------------------------------------------------------


def _gpu_idle(facts: Facts, samples: list[Sample], now: float) -> Finding | None:
    util = _gpu_means(_window(samples, now, GPU_IDLE_S, facts.interval_s)) if facts.real_gpus else None
    if util is None or max(util) >= GPU_IDLE_PERCENT:
        return None
    return Finding("gpu_idle", "warning", {"util": _num(max(util)), "minutes": str(GPU_IDLE_S // 60),
                                           "gpus": str(facts.real_gpus)})


def _memory_high(facts: Facts, samples: list[Sample], now: float) -> Finding | None:
    latest = samples[-1] if samples and now - samples[-1].at <= 2 * facts.interval_s else None
    if latest is None or not latest.memory_limit or latest.memory_used / latest.memory_limit <= MEMORY_HIGH:
        return None
    return Finding("memory_high", "warning", {"percent": _num(100 * latest.memory_used / latest.memory_limit),
                                              "limit": _size(latest.memory_limit)})


def _disk_full(disk: DiskUsage | None) -> Finding | None:
    if disk is None or not disk.total or disk.used / disk.total <= DISK_FULL:
        return None
    return Finding("disk_full", "warning", {"percent": _num(100 * disk.used / disk.total), "used": _size(disk.used),
                                            "total": _size(disk.total)})


def _cpu_bound(facts: Facts, samples: list[Sample], now: float) -> Finding | None:
    window = _window(samples, now, CPU_BOUND_S, facts.interval_s) if facts.real_gpus else None
    cpu, util = _cpu_mean(window), _gpu_means(window)
    if cpu is None or util is None or cpu < CPU_BOUND_PERCENT or max(util) >= CPU_BOUND_GPU_PERCENT:
        return None
    return Finding("cpu_bound", "info", {"cpu": _num(cpu), "util": _num(max(util)),
                                         "minutes": str(CPU_BOUND_S // 60)})


def _no_access(facts: Facts, samples: list[Sample], now: float) -> Finding | None:
    last = max((t for t in (facts.last_access_at, facts.started_at) if t is not None), default=None)
    if facts.status != "running" or facts.auto_stop_idle or last is None or now - last < NO_ACCESS_S:
        return None
    # Nobody logged in is fine for a job running unattended: only an instance seen doing
    # little for the last half hour is idle.
    window = _window(samples, now, GPU_IDLE_S, facts.interval_s)
    cpu, util = _cpu_mean(window), _gpu_means(window) if facts.real_gpus else [0.0]
    if cpu is None or util is None or cpu >= BUSY_CPU_PERCENT or max(util) >= GPU_IDLE_PERCENT:
        return None
    return Finding("no_access", "info", {"idle": _duration(now - last)})


def _env_check(facts: Facts) -> Finding | None:
    check = facts.env_check
    if not check or check.get("ok") is not False:
        return None
    error = check.get("error") or "; ".join(check.get("errors") or []) or "no details"
    return Finding("env_check_failed", "warning", {"error": error})


# ---- windows and numbers ------------------------------------------------------------------


def _window(samples: list[Sample], now: float, seconds: float, interval_s: float) -> list[Sample] | None:
    """The samples of the last `seconds`, or None unless they cover all of it without a gap
    (the instance too new, stopped in between, or the sampler was down)."""
    recent = [s for s in samples if s.at >= now - seconds]
    slack = 2.5 * interval_s
    if not recent or recent[0].at > now - seconds + slack or now - recent[-1].at > slack:
        return None
    if any(b.at - a.at > slack for a, b in zip(recent, recent[1:])):
        return None
    return recent


def _cpu_mean(window: list[Sample] | None) -> float | None:
    values = [s.cpu_percent for s in window or [] if s.cpu_percent is not None]
    return sum(values) / len(values) if values and len(values) >= len(window) - 1 else None  # the first has none


def _gpu_means(window: list[Sample] | None) -> list[float] | None:
    """Each GPU's mean utilisation over the window; None unless every sample has some."""
    if not window:
        return None
    per_gpu: dict[str, list[float]] = {}
    for sample in window:
        readings = [g for g in sample.gpus if g.util_percent is not None]
        if not readings:
            return None
        for gpu in readings:
            per_gpu.setdefault(gpu.uuid, []).append(gpu.util_percent)
    return [sum(values) / len(values) for values in per_gpu.values()]


def _num(value: float) -> str:
    return f"{value:.0f}"


def _size(value: int) -> str:
    return f"{value / 2**30:.1f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"


def _duration(seconds: float) -> str:
    hours, minutes = int(seconds // 3600), int(seconds % 3600 // 60)
    return f"{hours} h {minutes} min"
