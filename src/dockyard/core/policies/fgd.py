"""FGD, Fragmentation Gradient Descent (Weng et al., USENIX ATC '23), as the paper's artifact
runs it: place the task where the workload-expected fragmentation grows least.

Like the artifact (a Kubernetes score plugin), a node's score is the integer
int(100 * sigmoid(-delta / 1000)) of the fragmentation change delta (milli-GPU), nodes with the
best score tie and one of them is drawn at random, and a share goes on the first GPU of the
node with the best integer score."""

from __future__ import annotations

import numpy as np

from dockyard.core.policies.candidates import DeltaCache, gpus_of, quantized_score
from dockyard.core.policies.cluster import ClusterState, Decision, Request
from dockyard.core.policies.fragmentation import Fragmentation, Workload


class FGD:
    name = "fgd"

    def __init__(self, workload: Workload, seed: int = 0) -> None:
        self.workload = workload
        self.rng = np.random.default_rng(seed)
        self._cache: DeltaCache | None = None

    def place(self, state: ClusterState, request: Request) -> Decision | None:
        nodes = np.flatnonzero(state.fits(request))
        if not nodes.size:
            return None
        self._cache = DeltaCache.for_state(
            self._cache, state, lambda: DeltaCache(Fragmentation(self.workload, state), state, quantize=True))
        delta, choice = self._cache.best(state, request, nodes)
        score = quantized_score(delta)
        best = np.flatnonzero(score == score.max())
        pick = best[self.rng.integers(len(best))]
        return state.decide(int(nodes[pick]), request, gpus_of(int(choice[pick])))
