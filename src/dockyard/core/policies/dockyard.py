"""Dockyard's policy: FGD's objective, scored exactly, with packing to break ties."""

from __future__ import annotations

import numpy as np

from dockyard.core.policies.candidates import DeltaCache, gpus_of
from dockyard.core.policies.cluster import ClusterState, Decision, Request
from dockyard.core.policies.fragmentation import Fragmentation, Workload


class Dockyard:
    name = "dockyard"

    def __init__(self, workload: Workload, seed: int = 0) -> None:
        self.workload = workload
        self._cache: DeltaCache | None = None

    def place(self, state: ClusterState, request: Request) -> Decision | None:
        nodes = np.flatnonzero(state.fits(request))
        if not nodes.size:
            return None
        self._cache = DeltaCache.for_state(
            self._cache, state, lambda: DeltaCache(Fragmentation(self.workload, state), state))
        delta, choice = self._cache.best(state, request, nodes)
        left = state.gpu_free[nodes].sum(axis=1)
        pick = np.lexsort((nodes, left, np.round(delta, 6)))[0]
        return state.decide(int(nodes[pick]), request, gpus_of(int(choice[pick])))
