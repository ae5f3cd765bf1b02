"""Trace-driven placement simulation, the method of the FGD paper (USENIX ATC '23): draw tasks
from the trace with replacement until their GPU requests reach `load` times the cluster's GPU
capacity, shuffle them with the seed, place them one at a time with no departures, and follow
the share of GPU capacity left unallocated as the arrived load grows. Pure: no I/O."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from dockyard.core.policies import ClusterState, NodeSpec, Request, Workload, make_policy

STEP = 0.1


@dataclass(frozen=True)
class Step:
    load: float  # arrived GPU requests / GPU capacity
    unallocated_pct: float  # free GPU compute / GPU capacity, in %


@dataclass(frozen=True)
class SimulationResult:
    policy: str
    seed: int
    steps: list[Step]
    decision_ms_p50: float  # wall clock
    decision_ms_p99: float
    decision_cpu_ms_p50: float  # CPU time of the deciding thread: the same on a busy machine
    decision_cpu_ms_p99: float
    placed: int
    failed: int

    def as_dict(self) -> dict:
        return {"policy": self.policy, "seed": self.seed,
                "steps": [{"load": s.load, "unallocated_pct": s.unallocated_pct} for s in self.steps],
                "decision_ms": {"p50": self.decision_ms_p50, "p99": self.decision_ms_p99},
                "decision_cpu_ms": {"p50": self.decision_cpu_ms_p50, "p99": self.decision_cpu_ms_p99},
                "placed": self.placed, "failed": self.failed}


def arrivals(pods: list[Request], capacity_milli: int, load: float, seed: int) -> list[Request]:
    """Tasks drawn with replacement until their GPU requests reach load x capacity, shuffled."""
    rng = np.random.default_rng(seed)
    demand = np.array([p.gpu_milli_total for p in pods], dtype=np.int64)
    target = load * capacity_milli
    drawn: list[np.ndarray] = []
    total = 0
    batch = max(16, int(target / max(1.0, demand.mean())) // 4)
    while total < target:
        idx = rng.integers(len(pods), size=batch)
        sums = np.cumsum(demand[idx]) + total
        enough = np.flatnonzero(sums >= target)
        if enough.size:
            idx = idx[: enough[0] + 1]
        drawn.append(idx)
        total = int(sums[len(idx) - 1])
    order = rng.permutation(np.concatenate(drawn))
    return [pods[i] for i in order]


def simulate(nodes: list[NodeSpec], pods: list[Request], policy_name: str, seed: int, load: float = 1.3) -> SimulationResult:
    if load <= 0:
        raise ValueError("load must be above 0")
    state = ClusterState(nodes)
    if not state.capacity_milli:
        raise ValueError("the cluster has no GPUs")
    policy = make_policy(policy_name, workload=Workload.from_requests(pods))
    tasks = arrivals(pods, state.capacity_milli, load, seed)
    marks = [round(STEP * k, 10) for k in range(1, int(round(load / STEP)) + 1)]
    steps: list[Step] = []
    times, cpu_times = np.empty(len(tasks)), np.empty(len(tasks))
    arrived = placed = 0
    clock, cpu_clock = time.perf_counter, time.thread_time
    for i, task in enumerate(tasks):
        start, cpu_start = clock(), cpu_clock()
        decision = policy.place(state, task)
        times[i], cpu_times[i] = clock() - start, cpu_clock() - cpu_start
        if decision is not None:
            state.apply(decision)
            placed += 1
        arrived += task.gpu_milli_total
        while len(steps) < len(marks) and arrived >= marks[len(steps)] * state.capacity_milli - 1e-6:
            steps.append(Step(marks[len(steps)], round(100.0 * state.free_milli / state.capacity_milli, 4)))
    p50, p99 = np.percentile(times * 1000.0, [50, 99])
    cpu_p50, cpu_p99 = np.percentile(cpu_times * 1000.0, [50, 99])
    return SimulationResult(policy_name, seed, steps, round(float(p50), 4), round(float(p99), 4),
                            round(float(cpu_p50), 4), round(float(cpu_p99), 4), placed, len(tasks) - placed)
