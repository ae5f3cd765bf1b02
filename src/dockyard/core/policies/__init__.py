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
_FACTORIES: dict[str, Callable[[Workload | None], PlacementPolicy]] = {
    "first-fit": lambda workload: FirstFit(),
    "best-fit": lambda workload: BestFit(),
    "fgd": lambda workload: FGD(_needs(workload, "fgd")),
    "dockyard": lambda workload: Dockyard(_needs(workload, "dockyard")),
}
POLICY_NAMES = tuple(_FACTORIES)


def _needs(workload: Workload | None, name: str) -> Workload:
    if workload is None:
        raise ValueError(f"placement policy {name!r} needs the expected workload")
    return workload


def make_policy(name: str, workload: Workload | None = None) -> PlacementPolicy:
    """The policy called `name`. All are deterministic: the same books and request give the
    same decision."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown placement policy {name!r}; choose from {', '.join(POLICY_NAMES)}") from None
    return factory(workload)


__all__ = ["MILLI", "ClusterState", "Decision", "NodeSpec", "Request", "Fragmentation", "TaskType", "Workload",
           "PlacementPolicy", "DEFAULT_POLICY", "POLICY_NAMES", "make_policy"]
