"""Choosing a node and specific GPUs (or a share of one) for a request. Pure: the caller
brings the facts.

`place` is the one decision; the policies of core/policies/ will take its place per node
pool (config's placement_policy). Until then every pool places by best fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dockyard.core.errors import Conflict, InvalidInput
from dockyard.core.sharing import MIG, SPLIT_MODES, Share, format_fraction, offered_fractions

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


@dataclass
class NodeView:
    """A node as placement sees it: every GPU it rents whole, which of them are free, and
    the GPUs it shares."""

    name: str
    models: dict[str, int]  # model -> GPUs of that model on this node that rent whole
    free: list[FreeGpu] = field(default_factory=list)
    online: bool = True
    shared: list[SharedGpu] = field(default_factory=list)


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
) -> Placement:
    """Pick a node and `count` free GPUs of `model` (or any one model), or a share of one.

    Best fit: the node (and model) with the fewest free GPUs that still has enough, so
    large free blocks stay whole for large requests. Within a node the GPUs the
    instance held before come first (a restart then reuses its container), then by index.
    """
    if share is not None:
        return _place_share(nodes, model, share, preferred_uuids)
    online = [n for n in nodes if n.online]
    if count == 0:
        if not online:
            raise Conflict("no node is online")
        # Put GPU-less instances where they take the fewest GPUs' worth of room.
        chosen = max(online, key=lambda n: (len(n.free), n.name))
        return Placement(chosen.name, ())

    candidates: list[tuple[int, str, str, list[FreeGpu]]] = []
    for node in online:
        by_model: dict[str, list[FreeGpu]] = {}
        for gpu in node.free:
            by_model.setdefault(gpu.model, []).append(gpu)
        for gpu_model, free in by_model.items():
            if model in (ANY_MODEL, gpu_model) and len(free) >= count:
                candidates.append((len(free), node.name, gpu_model, free))
    if not candidates:
        raise Conflict(not_enough_message(online, model, count))
    _, node_name, _, free = min(candidates, key=lambda c: (c[0], c[1], c[2]))
    ordered = sorted(free, key=lambda g: (g.uuid not in preferred_uuids, g.index))
    return Placement(node_name, tuple(ordered[:count]))


def _place_share(nodes: list[NodeView], model: str, share: Share, preferred_uuids: frozenset[str]) -> Placement:
    """Best fit for shares: the GPU (whichever node) with the fewest free slots that still
    holds the share, so partly used GPUs fill up before a free one is cut; the GPU held
    before comes first. The share's slots are the GPU's lowest free ones."""
    candidates = []
    for node in (n for n in nodes if n.online):
        for shared in node.shared:
            if model not in (ANY_MODEL, shared.gpu.model):
                continue
            free = shared.free_slots
            if share.profile is not None:
                fitting = [s for s in free if s.profile == share.profile] if shared.mode == MIG else []
                fitting.sort(key=lambda s: s.uuid not in preferred_uuids)
                needed = 1
            else:
                needed = share.slots_on(len(shared.slots)) if shared.mode in SPLIT_MODES else None
                fitting = free
            if needed is None or len(fitting) < needed:
                continue
            preferred = shared.gpu.uuid in preferred_uuids or fitting[0].uuid in preferred_uuids
            candidates.append(((not preferred, len(free), node.name, shared.gpu.index), node.name, shared,
                               tuple(s.id for s in fitting[:needed])))
    if not candidates:
        label = "GPUs" if model == ANY_MODEL else f"{model} GPUs"
        raise Conflict(f"no free share of {share.label} on {label} now: every shared GPU that offers it is "
                       f"taken; try later, or another size")
    _, node_name, shared, slots = min(candidates, key=lambda c: c[0])
    return Placement(node_name, (shared.gpu,), slots)


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
