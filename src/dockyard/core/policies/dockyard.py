"""Dockyard's policy: FGD's fragmentation, plus keeping each node's free CPU in step with its
free GPUs, with ties broken towards packing.

FGD sees CPU only once a task type no longer fits a node, and by then GPUs are stranded
without CPU (or CPU that CPU-heavy tasks need has gone to CPU-light ones). Dockyard measures a
node's imbalance, how far its free GPU compute is from the GPU compute its free CPU could serve
at the workload's CPU per GPU (both in milli-GPU), and scores a placement by FGD's
fragmentation change plus BALANCE times the change of the imbalance, quantized as FGD's score
is. Among the nodes with the best score it takes the one left with the least free GPU compute
plus imbalance: packing nodes already in use keeps whole nodes free for multi-GPU tasks and
partly used GPUs together (docs/placement.md has the measurements, tuned on the default trace
only)."""

from __future__ import annotations

import numpy as np

from dockyard.core.policies.candidates import gpus_of, quantized_score
from dockyard.core.policies.cluster import MILLI, ClusterState, Decision, Request
from dockyard.core.policies.fgd import FGD
from dockyard.core.policies.fragmentation import Workload

BALANCE = 0.8  # weight of the imbalance change against the fragmentation change, both milli-GPU


def cpu_per_gpu(workload: Workload) -> float:
    """The workload's CPU (milli-cores) per whole GPU asked for, over its GPU task types; 0 when
    no type asks for a GPU (then there is nothing to balance)."""
    gpu_types = [t for t in workload.types if t.request.gpus]
    gpus = sum(t.weight * t.request.gpu_milli_total for t in gpu_types) / MILLI
    return sum(t.weight * t.request.cpu_milli for t in gpu_types) / gpus if gpus else 0.0


def imbalance(gpu_free: np.ndarray, cpu_free: np.ndarray, ratio: float) -> np.ndarray:
    """|free GPU compute - the GPU compute the free CPU could serve at `ratio` milli-cores per
    GPU|, in milli-GPU; 0 without a ratio."""
    if ratio <= 0:
        return np.zeros(len(gpu_free))
    return np.abs(gpu_free - cpu_free * (MILLI / ratio))


class Dockyard(FGD):
    name = "dockyard"

    def __init__(self, workload: Workload) -> None:
        super().__init__(workload)
        self.ratio = cpu_per_gpu(workload)

    def place(self, state: ClusterState, request: Request) -> Decision | None:
        nodes, delta, choice = self.deltas(state, request)
        if not nodes.size:
            return None
        gpu_free, cpu_free = state.gpu_free[nodes].sum(axis=1), state.cpu_free[nodes]
        gpu_left, cpu_left = gpu_free - request.gpu_milli_total, cpu_free - request.cpu_milli
        after = imbalance(gpu_left, cpu_left, self.ratio)
        score = quantized_score(delta + BALANCE * (after - imbalance(gpu_free, cpu_free, self.ratio)))
        tied = np.flatnonzero(score == score.max())
        pick = int(tied[np.argmin(gpu_left[tied] + after[tied])])  # argmin: the first of equals
        return state.decide(int(nodes[pick]), request, gpus_of(int(choice[pick])))
