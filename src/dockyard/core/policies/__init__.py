"""Placement policies: pure functions of a cluster's books and a request.

    state = ClusterState(nodes)
    policy = make_policy("dockyard", workload=Workload.from_requests(recent_requests))
    decision = policy.place(state, request)   # None: nothing fits now
    state.apply(decision)
"""

from __future__ import annotations

from typing import Callable, Protocol

from dockyard.core.policies.cluster import MILLI, ClusterState, Decision, NodeSpec, Request
from dockyard.core.policies.dockyard import Dockyard
from dockyard.core.policies.fgd import FGD
from dockyard.core.policies.fragmentation import Fragmentation, TaskType, Workload
from dockyard.core.policies.simple import BestFit, FirstFit


class PlacementPolicy(Protocol):
    name: str

    def place(self, state: ClusterState, request: Request) -> Decision | None: ...


DEFAULT_POLICY = "dockyard"

# placement_policy values; the workload-aware ones need the expected workload
_FACTORIES: dict[str, Callable[[Workload | None, int], PlacementPolicy]] = {
    "first-fit": lambda workload, seed: FirstFit(),
    "best-fit": lambda workload, seed: BestFit(),
    "fgd": lambda workload, seed: FGD(_needs(workload, "fgd"), seed),
    "dockyard": lambda workload, seed: Dockyard(_needs(workload, "dockyard"), seed),
}
POLICY_NAMES = tuple(_FACTORIES)


def _needs(workload: Workload | None, name: str) -> Workload:
    if workload is None:
        raise ValueError(f"placement policy {name!r} needs the expected workload")
    return workload


def make_policy(name: str, workload: Workload | None = None, seed: int = 0) -> PlacementPolicy:
    """The policy called `name`; `seed` drives the random tie-breaks of those that have them."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown placement policy {name!r}; choose from {', '.join(POLICY_NAMES)}") from None
    return factory(workload, seed)


__all__ = ["MILLI", "ClusterState", "Decision", "NodeSpec", "Request", "Fragmentation", "TaskType", "Workload",
           "PlacementPolicy", "DEFAULT_POLICY", "POLICY_NAMES", "make_policy"]
