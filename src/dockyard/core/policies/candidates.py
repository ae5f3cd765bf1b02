"""The fragmentation change of placing a request on each node, cached per node.

A node's answer only changes when the node does (`ClusterState.version`), and one decision
changes one node, so after the first request of a shape only the node changed since is scored
again. For a share every GPU that could take it is tried (GPUs in the same state only once);
whole GPUs take the node's first free ones, which are all alike."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dockyard.core.policies.cluster import ClusterState, Request
from dockyard.core.policies.fragmentation import Fragmentation


def quantized_score(delta: np.ndarray) -> np.ndarray:
    """The artifact's node score: int(100 * sigmoid(-delta / 1000)), delta in milli-GPU."""
    return (100.0 / (1.0 + np.exp(delta / 1000.0))).astype(np.int64)


@dataclass
class _Entry:
    delta: np.ndarray  # per node: fragmentation change of the best placement there
    choice: np.ndarray  # per node: bitmask of the GPUs of that placement
    seen: np.ndarray  # per node: the node version the two were computed at


class DeltaCache:
    """Per request shape and node: the fragmentation change of its placement there and the GPUs
    it takes. A share goes on the first GPU with the best integer score (quantized_score), as
    in the paper's artifact."""

    def __init__(self, fragmentation: Fragmentation, state: ClusterState) -> None:
        self.frag = fragmentation
        self.uid = state.uid  # the one state this cache is valid for
        self._entries: dict[Request, _Entry] = {}
        self._current = np.zeros(len(state.nodes))
        self._current_seen = np.full(len(state.nodes), -1, dtype=np.int64)

    @classmethod
    def for_state(cls, cache: "DeltaCache | None", state: ClusterState, make) -> "DeltaCache":
        """`cache` if it belongs to `state`, else a new one from make()."""
        return cache if cache is not None and cache.uid == state.uid else make()

    def current(self, state: ClusterState, nodes: np.ndarray) -> np.ndarray:
        """Fragmentation of the nodes as they are now."""
        stale = nodes[self._current_seen[nodes] != state.version[nodes]]
        if stale.size:
            self._current[stale] = self.frag.of_nodes(state, stale)
            self._current_seen[stale] = state.version[stale]
        return self._current[nodes]

    def best(self, state: ClusterState, request: Request, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For nodes that fit the request: (delta, GPU bitmask) of its best placement on each."""
        entry = self._entries.get(request)
        if entry is None:
            n = len(state.nodes)
            entry = self._entries[request] = _Entry(np.zeros(n), np.zeros(n, dtype=np.int64),
                                                     np.full(n, -1, dtype=np.int64))
        stale = nodes[entry.seen[nodes] != state.version[nodes]]
        if stale.size:
            if stale.size > _GROUP_ABOVE:  # nodes in the same state have the same answer: score each state once
                first, inverse = _alike(state, stale)
                delta, choice = self._evaluate(state, request, stale[first])
                delta, choice = delta[inverse], choice[inverse]
            else:
                delta, choice = self._evaluate(state, request, stale)
            entry.delta[stale], entry.choice[stale] = delta, choice
            entry.seen[stale] = state.version[stale]
        return entry.delta[nodes], entry.choice[nodes]

    def _evaluate(self, state: ClusterState, request: Request, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        before = self.current(state, nodes)
        free, gmem = state.gpu_free[nodes], state.gpu_mem_free[nodes]
        cpu = state.cpu_free[nodes] - request.cpu_milli
        model = state.model[nodes]
        if request.gpus == 0:
            return self.frag.score(free, gmem, cpu, model) - before, np.zeros(len(nodes), dtype=np.int64)
        if not request.shared:
            take = state.whole_free()[nodes]
            take &= np.cumsum(take, axis=1) <= request.gpus
            after = self.frag.score(np.where(take, 0, free), np.where(take, 0, gmem), cpu, model)
            return after - before, (take * (1 << np.arange(take.shape[1]))).sum(axis=1)
        return self._share(free, gmem, cpu, model, before, request, state.takes_share[nodes])

    def _share(self, free, gmem, cpu, model, before, request, takes_share):
        slots = takes_share & (free >= request.milli) & (gmem >= request.gpu_memory_mib)
        width = free.shape[1]
        same = (free[:, :, None] == free[:, None, :]) & (gmem[:, :, None] == gmem[:, None, :])
        earlier = np.tril(np.ones((width, width), dtype=bool), k=-1)  # [i, j]: j < i
        slots &= ~(same & earlier[None] & slots[:, None, :]).any(axis=2)
        row, gpu = np.nonzero(slots)
        new_free, new_gmem = free[row].copy(), gmem[row].copy()
        at = np.arange(len(row))
        new_free[at, gpu] -= request.milli
        new_gmem[at, gpu] -= request.gpu_memory_mib
        delta = self.frag.score(new_free, new_gmem, cpu[row], model[row]) - before[row]
        order = np.lexsort((gpu, -quantized_score(delta), row))
        _, first = np.unique(row[order], return_index=True)
        pick = order[first]
        return delta[pick], (1 << gpu[pick]).astype(np.int64)


_GROUP_ABOVE = 16  # grouping costs a sort; below this many nodes, scoring each is cheaper


def _alike(state: ClusterState, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group nodes whose books (as fragmentation reads them) are identical: (position of each
    group's first node, group of each node).
    Rows are grouped by a 64-bit hash (one sort of integers, not of rows), then checked equal to
    their group's first row; a collision falls back to grouping the rows themselves."""
    # everything fragmentation and fitting read; the masks only where real placement narrowed them
    masks = [m[nodes] for m in (state.takes_whole, state.takes_share) if not np.array_equal(m, state.exists)]
    rows = np.concatenate([state.gpu_free[nodes], state.gpu_mem_free[nodes], state.cpu_free[nodes, None],
                           state.model[nodes, None], *masks], axis=1).astype(np.int64)
    keys = rows @ _hash_weights(rows.shape[1])  # wraps around: a hash, not a sum
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if not (rows == rows[first][inverse]).all():
        _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
    return first, inverse


_weights: dict[int, np.ndarray] = {}


def _hash_weights(width: int) -> np.ndarray:
    if width not in _weights:
        _weights[width] = np.random.default_rng(width).integers(1, 2**62, size=width, dtype=np.int64) | 1
    return _weights[width]


def gpus_of(mask: int) -> tuple[int, ...]:
    return tuple(i for i in range(mask.bit_length()) if mask >> i & 1)
