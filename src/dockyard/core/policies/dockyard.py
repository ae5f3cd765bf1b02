"""Dockyard's policy: FGD's score, with ties broken towards packing nodes whose leftover CPU
matches their leftover GPUs.

FGD's integer score puts placements whose fragmentation changes differ by less than about 4% of
a GPU in one class, and many nodes tie. FGD then takes the first node in the cluster's order;
Dockyard takes the tied node with the least cost, where the cost of a node after the placement
is its free GPU compute plus BALANCE times how far its free CPU is from what that free compute
needs at the workload's CPU per GPU. The first term packs: filling nodes already in use keeps
whole nodes free for multi-GPU tasks and keeps partly used GPUs together. The second keeps
CPU and GPUs in step: FGD only sees CPU once a task type no longer fits, by which time GPUs
are stranded without CPU; keeping each node's leftovers in the workload's proportion avoids
that, and keeps CPU-rich nodes for the tasks (and the CPU-heavy shares) that need their CPU
(docs/placement.md has the measurements, tuned on the default trace only)."""

from __future__ import annotations

import numpy as np

from dockyard.core.policies.candidates import gpus_of
from dockyard.core.policies.cluster import MILLI, ClusterState, Decision, Request
from dockyard.core.policies.fgd import FGD
from dockyard.core.policies.fragmentation import Workload

BALANCE = 0.3  # weight of the CPU/GPU imbalance against free GPU compute, both in milli-GPU


def cpu_per_gpu(workload: Workload) -> float:
    """The workload's CPU (milli-cores) per whole GPU asked for, over its GPU task types; 0 when
    no type asks for a GPU (then balance has nothing to weigh)."""
    gpu_types = [t for t in workload.types if t.request.gpus]
    gpus = sum(t.weight * t.request.gpu_milli_total for t in gpu_types) / MILLI
    return sum(t.weight * t.request.cpu_milli for t in gpu_types) / gpus if gpus else 0.0


def cost(gpu_left: np.ndarray, cpu_left: np.ndarray, ratio: float) -> np.ndarray:
    """Per node, after a placement: free GPU compute plus BALANCE x |free GPU compute - the GPU
    compute its free CPU could serve at `ratio` milli-cores per GPU| (milli-GPU)."""
    if ratio <= 0:
        return gpu_left.astype(float)
    return gpu_left + BALANCE * np.abs(gpu_left - cpu_left * MILLI / ratio)


class Dockyard(FGD):
    name = "dockyard"

    def __init__(self, workload: Workload) -> None:
        super().__init__(workload)
        self.ratio = cpu_per_gpu(workload)

    def place(self, state: ClusterState, request: Request) -> Decision | None:
        nodes, score, choice = self.scores(state, request)
        if not nodes.size:
            return None
        tied = np.flatnonzero(score == score.max())
        at = nodes[tied]
        gpu_left = state.gpu_free[at].sum(axis=1) - request.gpu_milli_total
        cpu_left = state.cpu_free[at] - request.cpu_milli
        pick = int(tied[np.argmin(cost(gpu_left, cpu_left, self.ratio))])  # argmin: the first of equals
        return state.decide(int(nodes[pick]), request, gpus_of(int(choice[pick])))
