"""GPU fragmentation of a node against a target workload (Weng et al., "Beware of Fragmentation:
Scheduling GPU-Sharing Workloads with Fragmentation Gradient Descent", USENIX ATC '23).

For one task type m, the fragment of node n is the free GPU compute that m cannot use:
- all of the node's free GPU compute if m cannot run there at all (it asks for no GPU, the
  node's GPU model is not one m accepts, or too few GPUs or too little CPU are left);
- otherwise the free compute of the GPUs that are too small for m (less free than m asks per GPU).
The node's fragmentation is the expectation over the workload: F_n = sum_m p_m F_n(m), with p_m
the share of type m among the workload's tasks. Everything is vectorised over a batch of node
states (rows), so a policy can score every candidate placement in one pass."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from dockyard.core.policies.cluster import MILLI, ClusterState, Request


@dataclass(frozen=True)
class TaskType:
    request: Request
    weight: float


class Workload:
    """The task types a policy expects, with their shares (summing to 1)."""

    def __init__(self, types: list[TaskType]) -> None:
        total = sum(t.weight for t in types)
        if not types or total <= 0:
            raise ValueError("a workload needs at least one task type with a positive weight")
        self.types = [TaskType(t.request, t.weight / total) for t in types]

    @classmethod
    def from_requests(cls, requests: list[Request], popularity: float = 0.95) -> "Workload":
        """The most frequent request shapes that together make `popularity` of the tasks (the
        paper's "typical pods"); host memory is not part of a shape, as in the paper."""
        return cls.from_counts(Counter(requests), popularity)

    @classmethod
    def from_counts(cls, requests: Mapping[Request, int], popularity: float = 0.95) -> "Workload":
        """from_requests, of requests given with how many times each came."""
        counts: Counter[Request] = Counter()
        for request, times in requests.items():
            counts[_shape(request)] += times
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], _order(kv[0])))
        chosen, covered, total = [], 0, sum(counts.values())
        for shape, count in ranked:
            if covered >= popularity * total:
                break
            chosen.append(TaskType(shape, float(count)))
            covered += count
        return cls(chosen)


def _shape(r: Request) -> Request:
    return Request(gpus=r.gpus, milli=r.milli if r.gpus else MILLI, gpu_memory_mib=r.gpu_memory_mib,
                   models=r.models, cpu_milli=r.cpu_milli)


def _order(r: Request) -> tuple:
    return (r.gpus, r.milli, r.cpu_milli, r.gpu_memory_mib, sorted(r.models) if r.models else [])


class Fragmentation:
    """Scores node states against a workload. Like the paper, a type fits by its GPUs and CPU;
    host memory is not part of the measure."""

    def __init__(self, workload: Workload, state: ClusterState) -> None:
        types = workload.types
        self.weight = np.array([t.weight for t in types])
        self.milli = np.array([t.request.milli if t.request.gpus else 0 for t in types], dtype=np.int32)
        self.gpus = np.array([t.request.gpus for t in types], dtype=np.int32)
        self.gpu_mem = np.array([t.request.gpu_memory_mib for t in types], dtype=np.int64)
        self.cpu = np.array([t.request.cpu_milli for t in types], dtype=np.int64)
        # access[model, type]: may this type use GPUs of this model
        self.access = self._access(types, state) & (self.gpus > 0)  # a CPU-only type never "fits" GPUs
        self.needs_gpu_mem = bool((self.gpu_mem > 0).any())

    @staticmethod
    def _access(types: list[TaskType], state: ClusterState) -> np.ndarray:
        access = np.zeros((len(state.models), len(types)), dtype=bool)
        for j, t in enumerate(types):
            for i, model in enumerate(state.models):
                access[i, j] = model != "" and (t.request.models is None or model in t.request.models)
        return access

    def score(self, free: np.ndarray, gmem: np.ndarray, cpu: np.ndarray, model: np.ndarray) -> np.ndarray:
        """F for each row: free/gmem are (B, G) per-GPU free compute/memory, the rest (B,)."""
        usable = free[:, None, :] >= self.milli[None, :, None]  # (B, T, G)
        if self.needs_gpu_mem:
            usable &= gmem[:, None, :] >= self.gpu_mem[None, :, None]
        count = usable.sum(axis=2, dtype=np.int32)
        total = free.sum(axis=1)
        small = total[:, None] - np.einsum("btg,bg->bt", usable, free, dtype=np.int64)
        fits = (count >= self.gpus) & self.access[model] & (cpu[:, None] >= self.cpu)
        # a row-wise sum, not a matrix product: a row's result must not depend on the batch it is in
        return (np.where(fits, small, total[:, None]) * self.weight).sum(axis=1)

    def of_nodes(self, state: ClusterState, nodes: np.ndarray) -> np.ndarray:
        return self.score(state.gpu_free[nodes], state.gpu_mem_free[nodes], state.cpu_free[nodes], state.model[nodes])
