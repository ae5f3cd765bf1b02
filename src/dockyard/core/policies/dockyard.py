"""Dockyard's policy: FGD's score, with ties broken towards packing.

FGD's integer score puts placements whose fragmentation changes differ by less than about 4% of
a GPU in one class, and many nodes tie. FGD then takes the first node in the cluster's order;
Dockyard takes the tied node with the least free GPU compute (then the first). Filling nodes
that are already in use keeps whole nodes free for the multi-GPU tasks and keeps the partly
used GPUs together, where the shares that fit them will look (docs/placement.md has the
measurements, tuned on the default trace only)."""

from __future__ import annotations

import numpy as np

from dockyard.core.policies.candidates import gpus_of
from dockyard.core.policies.cluster import ClusterState, Decision, Request
from dockyard.core.policies.fgd import FGD


class Dockyard(FGD):
    name = "dockyard"

    def place(self, state: ClusterState, request: Request) -> Decision | None:
        nodes, score, choice = self.scores(state, request)
        if not nodes.size:
            return None
        tied = np.flatnonzero(score == score.max())
        pick = int(tied[np.argmin(state.gpu_free[nodes[tied]].sum(axis=1))])
        return state.decide(int(nodes[pick]), request, gpus_of(int(choice[pick])))
