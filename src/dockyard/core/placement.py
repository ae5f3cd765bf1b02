"""Choosing a node and specific GPUs (or a share of one) for a request. Pure: the caller
brings the facts.

`place` is the one decision, made by the placement policies of core/policies/ (the code the
simulator runs), each node pool by its own (`placement_policy`). The books a policy reads are
built here from the views: one policy node per (node, GPU model); per GPU the free compute in
milli-GPU and the free memory per mille of the GPU's; CPU and host memory in the units a
request's share is counted in (docs/placement.md, "Real placement").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from dockyard.core.errors import Conflict, InvalidInput
from dockyard.core.policies import DEFAULT_POLICY, MILLI, ClusterState, NodeSpec, Request, Workload, make_policy
from dockyard.core.policies.cluster import WHOLE_COUNTS
from dockyard.core.sharing import (MIG, SPLIT_MODES, Share, format_fraction, mig_milli, offered_fractions,
                                   parse_share)

ANY_MODEL = "any"


@dataclass(frozen=True)
class FreeGpu:
    """A GPU free as a whole; `slots` are its slot ids, all of which a whole rental takes."""

    id: int
    index: int
    uuid: str
    model: str
    slots: tuple[int, ...] = ()


@dataclass(frozen=True)
class Slot:
    id: int
    free: bool
    profile: str | None = None  # a MIG instance's profile and UUID
    uuid: str | None = None


@dataclass(frozen=True)
class SharedGpu:
    """A GPU its node shares (core/sharing.py): its mode and every slot, free or not."""

    gpu: FreeGpu  # slots left empty: see `slots`
    mode: str
    slots: tuple[Slot, ...]

    @property
    def free_slots(self) -> list[Slot]:
        return [s for s in self.slots if s.free]


@dataclass(frozen=True)
class HostShare:
    """What an instance gets of its node's CPUs and memory: per GPU it holds (times the part
    of one), or a fixed amount without GPUs (the driver gives exactly this)."""

    cpus_per_gpu: float
    memory_per_gpu_bytes: int
    no_gpu_cpus: float
    no_gpu_memory_bytes: int

    def of(self, milli: int, node_cpus: float = 0) -> tuple[float, int]:
        if milli:
            cpus, memory = self.cpus_per_gpu * milli / MILLI, self.memory_per_gpu_bytes * milli // MILLI
        else:
            cpus, memory = self.no_gpu_cpus, self.no_gpu_memory_bytes
        return (min(cpus, node_cpus) if node_cpus else cpus), memory


@dataclass
class NodeView:
    """A node as placement sees it: every GPU it rents whole, which of them are free, the
    GPUs it shares, its CPUs and memory (what running instances hold of them), and the
    placement policy of its pool."""

    name: str
    models: dict[str, int]  # model -> GPUs of that model on this node that rent whole
    free: list[FreeGpu] = field(default_factory=list)
    online: bool = True
    shared: list[SharedGpu] = field(default_factory=list)
    cpus: float = 0  # the node's own; an instance never gets more
    # What placement may promise to instances with GPUs (allocation ratios applied), and what
    # they hold of it; 0: not known, not a limit.
    capacity_cpus: float = 0
    capacity_memory_bytes: int = 0
    cpus_used: float = 0
    memory_used_bytes: int = 0
    host_share: HostShare | None = None  # None: CPU and memory are not limits here
    policy: str = DEFAULT_POLICY


@dataclass(frozen=True)
class Placement:
    node: str
    gpus: tuple[FreeGpu, ...]
    share_slots: tuple[int, ...] = ()  # a share's slots (of gpus[0]); whole GPUs: their own

    @property
    def slot_ids(self) -> tuple[int, ...]:
        """Every slot this placement takes: the rows the assignment inserts."""
        return self.share_slots or tuple(s for g in self.gpus for s in g.slots)


def check_request(nodes: list[NodeView], model: str, count: int, share: Share | None = None) -> None:
    """Refuse requests that no node could ever satisfy, naming the field at fault."""
    if share is not None:
        return check_share(nodes, model, count, share)
    if count < 0:
        raise InvalidInput("gpu_count: must be 0 or more", field="gpu_count")
    if count == 0 and model == ANY_MODEL:
        return
    known = sorted({m for n in nodes for m in n.models} | {s.gpu.model for n in nodes for s in n.shared})
    if model != ANY_MODEL and model not in known:
        raise InvalidInput(
            f"gpu_model: unknown GPU model {model!r}; this platform has: {', '.join(known) or 'none'}",
            field="gpu_model",
        )
    if count == 0:
        return
    most = max((n.models.get(m, 0) for n in nodes for m in n.models if model in (ANY_MODEL, m)), default=0)
    if count > most:
        what = "GPUs of one model" if model == ANY_MODEL else f"{model} GPUs"
        raise InvalidInput(
            f"gpu_count: {count} is more than any node holds (at most {most} {what} on one node)",
            field="gpu_count",
        )


def offered_shares(nodes: list[NodeView], model: str = ANY_MODEL) -> list[str]:
    """The share labels GPUs of `model` (or any) are offered in: fractions, then MIG profiles."""
    fractions, profiles = set(), set()
    for node in nodes:
        for shared in node.shared:
            if model not in (ANY_MODEL, shared.gpu.model):
                continue
            if shared.mode in SPLIT_MODES:
                fractions.update(offered_fractions(len(shared.slots)))
            else:
                profiles.update(s.profile for s in shared.slots)
    return [format_fraction(f) for f in sorted(fractions)] + sorted(profiles, key=lambda p: (int(p.split("g.")[0]), p))


def check_share(nodes: list[NodeView], model: str, count: int, share: Share) -> None:
    """A share is of one GPU, of a size (or MIG profile) some GPU here is offered in."""
    if count != 1:
        raise InvalidInput(f"gpu_count: a share is part of one GPU; gpu_count must be 1, not {count}", field="gpu_count")
    known = sorted({m for n in nodes for m in n.models} | {s.gpu.model for n in nodes for s in n.shared})
    if model != ANY_MODEL and model not in known:
        raise InvalidInput(
            f"gpu_model: unknown GPU model {model!r}; this platform has: {', '.join(known) or 'none'}",
            field="gpu_model",
        )
    offered = offered_shares(nodes, model)
    of = "" if model == ANY_MODEL else f" of model {model}"
    if not offered:
        raise InvalidInput(f"gpu_share: {share.label} asked, but no node shares its GPUs{of}; rent whole GPUs "
                           f"(--gpus 1)", field="gpu_share")
    if share.label not in offered:
        what = f"MIG profile {share.label} is on no GPU{of} here" if share.profile else \
            f"{share.label} is not a share offered for GPUs{of} here"
        raise InvalidInput(f"gpu_share: {what}; offered: {', '.join(offered)}", field="gpu_share")


def place(
    nodes: list[NodeView],
    model: str,
    count: int,
    preferred_uuids: frozenset[str] = frozenset(),
    share: Share | None = None,
    history: Mapping[tuple[int, str | None], int] | None = None,
) -> Placement:
    """Pick a node and `count` free GPUs of `model` (or any one model), or a share of one,
    by the placement policy of each node pool: the pools are tried in the order of their
    first node, and the first that has room places. `history` counts the (count, share) of
    recent requests: the workload fgd and dockyard expect, with every shape on offer.

    Among GPUs a policy finds alike, the ones the instance held before come first (a restart
    then reuses its container), then by index."""
    online = [n for n in nodes if n.online]
    pools: dict[str, list[NodeView]] = {}
    for node in online:
        pools.setdefault(node.policy, []).append(node)
    for policy, pool in pools.items():
        books = _Books(pool, model, count, share, preferred_uuids)
        workload = Workload.from_counts(books.workload(history or {}))
        decision = make_policy(policy, workload).place(books.state, books.request)
        if decision is not None:
            return books.placement(decision, share)
    if share is not None:
        label = "GPUs" if model == ANY_MODEL else f"{model} GPUs"
        raise Conflict(f"no free share of {share.label} on {label} now: every shared GPU that offers it is "
                       f"taken; try later, or another size")
    if count == 0:
        raise Conflict("no node has the CPUs and memory for an instance without GPUs" if online else "no node is online")
    raise Conflict(not_enough_message(online, model, count))


@dataclass
class _Gpu:
    """One GPU column of the books: what is free of it and which slots a share would take."""

    gpu: FreeGpu
    free: int  # milli-GPU
    memory: int  # per mille of the GPU's memory
    whole: bool  # free to rent whole
    share_slots: tuple[int, ...] = ()  # the slots the asked share takes here; () if it cannot
    before: bool = False  # held by the instance before (its GPU, or the MIG instance it takes)


class _Books:
    """A pool's nodes as the policies' ClusterState, for one request (`request`)."""

    def __init__(self, pool: list[NodeView], model: str, count: int, share: Share | None,
                 preferred: frozenset[str]) -> None:
        self.groups: list[tuple[NodeView, str, list[_Gpu]]] = []
        for node in pool:
            by_model: dict[str, list[_Gpu]] = {}
            for column in _columns(node, share, preferred):
                by_model.setdefault(column.gpu.model, []).append(column)
            self.groups += [(node, m, cols) for m, cols in sorted(by_model.items())] or [(node, "", [])]
        models = None if model == ANY_MODEL else frozenset({model})
        self.request = self._request(count, share, models)
        state = self.state = ClusterState([NodeSpec(f"{node.name}/{m}", m, len(cols), 0, 0, gpu_memory_mib=MILLI)
                                           for node, m, cols in self.groups])
        for i, (node, _, cols) in enumerate(self.groups):
            for j, c in enumerate(cols):
                state.gpu_free[i, j], state.gpu_mem_free[i, j] = c.free, c.memory
                state.takes_whole[i, j], state.takes_share[i, j] = c.whole, bool(c.share_slots)
            state.cpu_total[i], state.cpu_free[i], state.mem_free[i] = self._host_units(node)

    def _request(self, count: int, share: Share | None, models: frozenset[str] | None) -> Request:
        """The policies' request: GPU compute in milli-GPU, GPU memory per mille of the GPU's
        (a share gets its part of both), CPU and host memory in the request's own units
        (see _host_units)."""
        if share is None and count == 0:
            host = next((n.host_share for n, _, _ in self.groups if n.host_share), None)
            cpus, memory = host.of(0) if host else (0, 0)
            return Request(cpu_milli=int(cpus * MILLI), memory_mib=memory >> 20)
        if share is None:
            return Request(gpus=count, models=models, cpu_milli=count * MILLI, memory_mib=count * MILLI)
        return Request(gpus=1, milli=share.milli, gpu_memory_mib=share.milli, models=models,
                       cpu_milli=share.milli, memory_mib=share.milli)

    def _host_units(self, node: NodeView) -> tuple[int, int, int]:
        """A node's CPUs (all and free) and free memory, scaled so that the request costs its
        cpu_milli and memory_mib here as on every node: what the driver would give it here
        (HostShare.of) is that many units. A request with GPUs then costs its GPU-thousandths,
        like every task type of the workload. Instances without GPUs hold nothing: they run on
        top (NodeView.cpus_used), so only the node's size bounds one."""
        host, request = node.host_share, self.request
        if host is None or not node.capacity_cpus or not node.capacity_memory_bytes:
            return _UNLIMITED, _UNLIMITED, _UNLIMITED
        cpus, memory = host.of(request.gpu_milli_total, node.cpus)
        if cpus <= 0 or memory <= 0:
            return _UNLIMITED, _UNLIMITED, _UNLIMITED
        per_cpu, per_byte = request.cpu_milli / cpus, request.memory_mib / memory
        used_cpus, used_memory = (node.cpus_used, node.memory_used_bytes) if request.gpus else (0, 0)
        return (int(node.capacity_cpus * per_cpu + 1e-6), int((node.capacity_cpus - used_cpus) * per_cpu + 1e-6),
                int((node.capacity_memory_bytes - used_memory) * per_byte + 1e-6))

    def workload(self, history: Mapping[tuple[int, str | None], int]) -> Counter[Request]:
        """The requests fgd and dockyard expect, counted: the recent ones, and once each shape
        this pool offers (whole counts up to the most GPUs of one model on a node, and its shares)."""
        most = max((len(cols) for _, _, cols in self.groups), default=0)
        offered = Counter({(n, None): 1 for n in WHOLE_COUNTS if n <= most})
        offered.update((1, label) for label in offered_shares([n for n, _, _ in self.groups]))
        requests: Counter[Request] = Counter()
        for (count, label), times in [*history.items(), *offered.items()]:
            share = parse_share(label) if label else None
            if (count == 0 and share is None) or (share is not None and share.profile is not None):
                continue  # keep no room for CPU-only tasks; MIG instances are cut already, they fragment no further
            requests[self._request(count, share, None)] += times
        return requests or Counter([Request(gpus=1, cpu_milli=MILLI, memory_mib=MILLI)])

    def placement(self, decision, share: Share | None) -> Placement:
        node, _, cols = self.groups[decision.node]
        chosen = tuple(cols[g] for g in decision.gpus)
        if share is not None:
            return Placement(node.name, (chosen[0].gpu,), chosen[0].share_slots)
        return Placement(node.name, tuple(c.gpu for c in chosen))


_UNLIMITED = 2**62  # a node whose CPUs and memory are not known is never short of them


def _columns(node: NodeView, share: Share | None, preferred: frozenset[str]) -> list[_Gpu]:
    """The node's GPUs that have anything free, the ones held before first."""
    whole = {g.id: g for g in node.free}
    columns = {g.id: _Gpu(g, MILLI, MILLI, True, before=g.uuid in preferred) for g in node.free}
    for shared in node.shared:
        free = shared.free_slots
        gpu = whole.get(shared.gpu.id, shared.gpu)
        if not free:
            continue
        if shared.mode == MIG:
            fitting = [s for s in free if share is not None and s.profile == share.profile]
            fitting.sort(key=lambda s: s.uuid not in preferred)
            milli = min(MILLI, sum(mig_milli(s.profile) for s in free))
            column = _Gpu(gpu, milli, milli, False,
                          tuple(s.id for s in fitting[:1]), bool(fitting) and fitting[0].uuid in preferred)
        else:
            parts = len(shared.slots)
            needed = share.slots_on(parts) if share is not None else None
            slots = tuple(s.id for s in free[:needed]) if needed and len(free) >= needed else ()
            column = _Gpu(gpu, MILLI * len(free) // parts, MILLI * len(free) // parts,
                          shared.gpu.id in whole, slots, gpu.uuid in preferred)
        columns[shared.gpu.id] = column
    return sorted(columns.values(), key=lambda c: (not c.before, c.gpu.index))


def not_enough_message(nodes: list[NodeView], model: str, count: int) -> str:
    total_free = sum(1 for n in nodes for g in n.free if model in (ANY_MODEL, g.model))
    best = 0
    for node in nodes:
        per_model: dict[str, int] = {}
        for gpu in node.free:
            if model in (ANY_MODEL, gpu.model):
                per_model[gpu.model] = per_model.get(gpu.model, 0) + 1
        best = max([best, *per_model.values()])
    label = "GPUs" if model == ANY_MODEL else f"{model} GPUs"
    return (
        f"not enough free {label}: asked for {count}, {total_free} free in all, "
        f"at most {best} free on one node"
    )
