"""FGD, Fragmentation Gradient Descent (Weng et al., USENIX ATC '23): place each task where the
workload-expected fragmentation (see fragmentation.py) grows least.

Scored as the paper's artifact scores it (a Kubernetes score plugin): a node's score is the
integer int(100 * sigmoid(-delta / 1000)) of the fragmentation change delta (milli-GPU), and a
share goes on the first GPU of the node with the best integer score. Among nodes with the best
score the first in the cluster's order wins: with that rule the simulator reproduces the
artifact's figure on the default trace (random tie-breaks, as Kubernetes' selectHost does,
leave about twice as much unallocated in this simulator; see docs/placement.md)."""

from __future__ import annotations

import numpy as np

from dockyard.core.policies.candidates import DeltaCache, gpus_of, quantized_score
from dockyard.core.policies.cluster import ClusterState, Decision, Request
from dockyard.core.policies.fragmentation import Fragmentation, Workload


class FGD:
    name = "fgd"

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self._cache: DeltaCache | None = None

    def deltas(self, state: ClusterState, request: Request) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(fitting nodes, the fragmentation change of the best placement on each, the GPU
        bitmask it would use)."""
        nodes = np.flatnonzero(state.fits(request))
        self._cache = DeltaCache.for_state(
            self._cache, state, lambda: DeltaCache(Fragmentation(self.workload, state), state))
        delta, choice = self._cache.best(state, request, nodes)
        return nodes, delta, choice

    def place(self, state: ClusterState, request: Request) -> Decision | None:
        nodes, delta, choice = self.deltas(state, request)
        if not nodes.size:
            return None
        score = quantized_score(delta)
        pick = int(np.argmax(score))  # the first of the best
        return state.decide(int(nodes[pick]), request, gpus_of(int(choice[pick])))
