"""Baselines without a model of the workload: first-fit and best-fit."""

from __future__ import annotations

import numpy as np

from dockyard.core.policies.cluster import ClusterState, Decision, Request


class FirstFit:
    """The first node (in the cluster's order) that fits; a share takes the first GPU that fits."""

    name = "first-fit"

    def place(self, state: ClusterState, request: Request) -> Decision | None:
        nodes = np.flatnonzero(state.fits(request))
        if not nodes.size:
            return None
        node = int(nodes[0])
        if request.shared:
            return state.decide(node, request, (int(np.flatnonzero(state.share_slots(request)[node])[0]),))
        return state.decide(node, request)


class BestFit:
    """The node left with the least free GPU compute (then CPU) after placing; a share takes
    the GPU with the least free compute that still fits it."""

    name = "best-fit"

    def place(self, state: ClusterState, request: Request) -> Decision | None:
        nodes = np.flatnonzero(state.fits(request))
        if not nodes.size:
            return None
        gpu_left = state.gpu_free[nodes].sum(axis=1) - request.gpu_milli_total
        cpu_left = (state.cpu_free[nodes] - request.cpu_milli) / np.maximum(1, state.cpu_total[nodes])
        node = int(nodes[np.lexsort((nodes, cpu_left, gpu_left))[0]])
        if request.shared:
            slots = state.share_slots(request)[node]
            free = np.where(slots, state.gpu_free[node], np.iinfo(np.int32).max)
            return state.decide(node, request, (int(np.argmin(free)),))
        return state.decide(node, request)
