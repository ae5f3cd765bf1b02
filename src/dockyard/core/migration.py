"""Where a migration may go (docs/migrate.md). Pure: the caller brings the nodes as
placement sees them (online ones, with their free GPUs)."""

from __future__ import annotations

from dockyard.core.errors import Conflict, InvalidInput, NotFound
from dockyard.core.placement import NodeView, Placement, place


def choose_target(views: list[NodeView], known: set[str], current: str, model: str, count: int,
                  wanted: str | None) -> Placement:
    """The node (and its GPUs) an instance on `current` needing `count` GPUs of `model`
    moves to: `wanted`, or the best fit among the other online nodes. `known`: every
    node's name, online or not. Refusals name the node and the free count."""
    if wanted is not None:
        if wanted not in known:
            raise NotFound(f"node: node {wanted!r} not found", field="node")
        if wanted == current:
            raise InvalidInput(f"node: the instance is on node {wanted} already", field="node")
        view = next((v for v in views if v.name == wanted), None)
        if view is None:
            raise Conflict(f"node: node {wanted} is offline", field="node")
        free = sum(1 for g in view.free if g.model == model)
        if count and free < count:
            has = f"{free} {model} GPUs are free" if view.models.get(model) else f"it has no {model} GPUs"
            raise Conflict(f"node: on node {wanted} {has}; the instance needs {count}", field="node")
        return place([view], model, count)
    others = [v for v in views if v.name != current]
    fitting = [v for v in others if sum(1 for g in v.free if g.model == model) >= count]
    if not fitting:
        free = {v.name: sum(1 for g in v.free if g.model == model) for v in others}
        said = ", ".join(f"{n}: {f}" for n, f in sorted(free.items())) or "no other node is online"
        raise Conflict(f"no other node has {count} free {model} GPUs ({said}); try later, or start with "
                       "--no-gpu on its own node")
    return place(fitting, model, count)
