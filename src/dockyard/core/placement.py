"""Choosing a node and specific GPUs for a request. Pure: the caller brings the facts."""

from __future__ import annotations

from dataclasses import dataclass, field

from dockyard.core.errors import Conflict, InvalidInput

ANY_MODEL = "any"


@dataclass(frozen=True)
class FreeGpu:
    id: int
    index: int
    uuid: str
    model: str


@dataclass
class NodeView:
    """A node as placement sees it: every GPU it has, and which of them are free."""

    name: str
    models: dict[str, int]  # model -> total GPUs of that model on this node
    free: list[FreeGpu] = field(default_factory=list)
    online: bool = True


@dataclass(frozen=True)
class Placement:
    node: str
    gpus: tuple[FreeGpu, ...]


def check_request(nodes: list[NodeView], model: str, count: int) -> None:
    """Refuse requests that no node could ever satisfy, naming the field at fault."""
    if count < 0:
        raise InvalidInput("gpu_count: must be 0 or more", field="gpu_count")
    if count == 0 and model == ANY_MODEL:
        return
    known = sorted({m for n in nodes for m in n.models})
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


def place(
    nodes: list[NodeView],
    model: str,
    count: int,
    preferred_uuids: frozenset[str] = frozenset(),
) -> Placement:
    """Pick a node and `count` free GPUs of `model` (or any one model).

    Best fit: the node (and model) with the fewest free GPUs that still has enough, so
    large free blocks stay whole for large requests. Within a node the GPUs the
    instance held before come first (a restart then reuses its container), then by index.
    """
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
