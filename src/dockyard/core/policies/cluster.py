"""The books a placement policy reads and writes: nodes with per-GPU free compute and memory,
a request, and a decision. Pure: arrays in memory, no I/O.

GPU compute is counted in milli-GPUs (1000 = one whole GPU). A fractional request asks for
`milli` < 1000 of one GPU plus `gpu_memory_mib` of its memory; a whole request asks for
`gpus` GPUs that nobody else uses."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

MILLI = 1000
WHOLE_COUNTS = (1, 2, 4, 8)


@dataclass(frozen=True)
class NodeSpec:
    name: str
    model: str  # every GPU of a node is of one model; "" for a CPU-only node
    gpus: int
    cpu_milli: int
    memory_mib: int
    gpu_memory_mib: int = 0  # per GPU


@dataclass(frozen=True)
class Request:
    """What one task asks for. `models` is None for any model, else the models it accepts."""

    gpus: int = 0
    milli: int = MILLI  # per GPU; < MILLI only with gpus == 1 (a share)
    gpu_memory_mib: int = 0  # per GPU, for a share; a whole GPU takes all of its memory
    models: frozenset[str] | None = None
    cpu_milli: int = 0
    memory_mib: int = 0

    def __post_init__(self) -> None:
        if self.gpus < 0 or self.cpu_milli < 0 or self.memory_mib < 0 or self.gpu_memory_mib < 0:
            raise ValueError("request sizes must not be negative")
        if self.gpus and not 0 < self.milli <= MILLI:
            raise ValueError(f"milli must be in 1..{MILLI}")
        if self.milli < MILLI and self.gpus > 1:
            raise ValueError("a share is of one GPU")
        if self.models is not None and not self.models:
            raise ValueError("models: give at least one, or None for any")

    @property
    def shared(self) -> bool:
        return self.gpus == 1 and self.milli < MILLI

    @property
    def gpu_milli_total(self) -> int:
        return self.gpus * self.milli if self.gpus else 0


@dataclass(frozen=True)
class Decision:
    node: int  # index into the state's nodes
    gpus: tuple[int, ...]  # GPU indexes on that node
    milli: int  # taken from each of those GPUs
    gpu_memory_mib: int  # taken from each of those GPUs
    cpu_milli: int
    memory_mib: int


_state_ids = itertools.count()


class ClusterState:
    """Free resources of every node, as numpy arrays (node x GPU slot). GPU slots a node lacks
    hold 0 free compute and 0 memory, so they never fit anything and add nothing to sums.
    `version[n]` changes whenever node n changes, so policies can cache per-node work."""

    def __init__(self, nodes: list[NodeSpec]) -> None:
        if not nodes:
            raise ValueError("a cluster needs at least one node")
        self.nodes = list(nodes)
        self.uid = next(_state_ids)
        self.models = sorted({n.model for n in nodes})
        self.model_index = {m: i for i, m in enumerate(self.models)}
        width = max(1, max(n.gpus for n in nodes))
        count = len(nodes)
        self.gpu_count = np.array([n.gpus for n in nodes], dtype=np.int32)
        self.exists = np.arange(width)[None, :] < self.gpu_count[:, None]
        self.gpu_free = np.where(self.exists, MILLI, 0).astype(np.int32)
        self.gpu_mem_total = np.where(self.exists, np.array([n.gpu_memory_mib for n in nodes])[:, None], 0).astype(np.int64)
        self.gpu_mem_free = self.gpu_mem_total.copy()
        self.cpu_total = np.array([n.cpu_milli for n in nodes], dtype=np.int64)
        self.cpu_free = self.cpu_total.copy()
        self.mem_free = np.array([n.memory_mib for n in nodes], dtype=np.int64)
        self.model = np.array([self.model_index[n.model] for n in nodes], dtype=np.int32)
        # Which GPUs may be rented whole, and which may take the request's share: every GPU in a
        # simulated cluster; real placement (core/placement.py) narrows them to the GPUs whose
        # node shares them, and those offered in the asked size or MIG profile.
        self.takes_whole = self.exists.copy()
        self.takes_share = self.exists.copy()
        self.version = np.zeros(count, dtype=np.int64)
        self._clock = 0
        self.capacity_milli = int(self.gpu_count.sum()) * MILLI

    @property
    def free_milli(self) -> int:
        return int(self.gpu_free.sum())

    def model_allowed(self, models: frozenset[str] | None) -> np.ndarray:
        """Per node: does its GPU model satisfy the constraint."""
        if models is None:
            return np.ones(len(self.nodes), dtype=bool)
        allowed = [self.model_index[m] for m in models if m in self.model_index]
        return np.isin(self.model, allowed)

    def whole_free(self) -> np.ndarray:
        """Per GPU slot: nobody uses any of it."""
        return self.takes_whole & (self.gpu_free == MILLI) & (self.gpu_mem_free == self.gpu_mem_total)

    def fits(self, request: Request) -> np.ndarray:
        """Per node: could the request go there now."""
        ok = (self.cpu_free >= request.cpu_milli) & (self.mem_free >= request.memory_mib)
        if request.gpus == 0:
            return ok
        ok &= self.model_allowed(request.models)
        if request.shared:
            return ok & self.share_slots(request).any(axis=1)
        return ok & (self.whole_free().sum(axis=1) >= request.gpus)

    def share_slots(self, request: Request) -> np.ndarray:
        """Per GPU slot: could this share go on it."""
        return self.takes_share & (self.gpu_free >= request.milli) & (self.gpu_mem_free >= request.gpu_memory_mib)

    def decide(self, node: int, request: Request, gpus: tuple[int, ...] = ()) -> Decision:
        """A decision for `request` on `node`; for whole GPUs, `gpus` defaults to the first free."""
        if request.gpus and not request.shared and not gpus:
            gpus = tuple(int(i) for i in np.flatnonzero(self.whole_free()[node])[: request.gpus])
        memory = request.gpu_memory_mib if request.shared else int(self.gpu_mem_total[node, 0])
        return Decision(node, tuple(gpus), request.milli if request.gpus else 0, memory if request.gpus else 0,
                        request.cpu_milli, request.memory_mib)

    def apply(self, decision: Decision) -> None:
        """Book a decision. Refuses (ValueError, nothing changed) one that would over-commit."""
        n = decision.node
        if self.cpu_free[n] < decision.cpu_milli or self.mem_free[n] < decision.memory_mib:
            raise ValueError(f"node {self.nodes[n].name}: not enough CPU or memory left")
        if len(set(decision.gpus)) != len(decision.gpus):
            raise ValueError("a GPU appears twice in the decision")
        for g in decision.gpus:
            if not (0 <= g < self.gpu_count[n]):
                raise ValueError(f"node {self.nodes[n].name} has no GPU {g}")
            if self.gpu_free[n, g] < decision.milli or self.gpu_mem_free[n, g] < decision.gpu_memory_mib:
                raise ValueError(f"node {self.nodes[n].name}: GPU {g} has not enough left")
        self.cpu_free[n] -= decision.cpu_milli
        self.mem_free[n] -= decision.memory_mib
        for g in decision.gpus:
            self.gpu_free[n, g] -= decision.milli
            self.gpu_mem_free[n, g] -= decision.gpu_memory_mib
        self._clock += 1
        self.version[n] = self._clock
