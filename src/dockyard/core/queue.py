"""The start queue's rules (docs/queue.md). Pure: services/queue.py brings the facts.

An instance waits for GPUs of one model on one node (its disks are there). Waiters are
served strictly first come, first served per node and GPU model: only the earliest
waiter of a node and model may take its GPUs, and no later request, queued or plain
(a start or create without --queue), takes GPUs of that model on that node while
anyone waits for them. A waiter for 4 GPUs therefore starts as soon as 4 are free,
however many 1-GPU requests come after it; the price is that a 1-GPU request behind it
waits too, even when 1 GPU is free.
"""

from __future__ import annotations

from dataclasses import dataclass

from dockyard.core.errors import Conflict, InvalidInput

MAX_TIMEOUT_MINUTES = 7 * 24 * 60  # a week
# The ways out of a refusal for taken GPUs, as the API names them. A create already
# looks at every node, so moving elsewhere is a way out of a start only.
START_WAYS_OUT = ("no_gpu", "queue", "migrate")
CREATE_WAYS_OUT = ("no_gpu", "queue")


@dataclass(frozen=True)
class Waiter:
    id: str
    node: str
    model: str
    count: int
    seq: int  # arrival order, across all nodes


def check_timeout(minutes: int | None) -> None:
    if minutes is not None and not 1 <= minutes <= MAX_TIMEOUT_MINUTES:
        raise InvalidInput(f"queue_timeout_minutes: {minutes} is not between 1 and {MAX_TIMEOUT_MINUTES} (a week)",
                           field="queue_timeout_minutes")


def next_to_start(waiters: list[Waiter], free: dict[tuple[str, str], int]) -> Waiter | None:
    """The earliest waiter that may start now: the head of its node and model's line
    with enough free GPUs there. A head that does not fit blocks everyone behind it."""
    heads: dict[tuple[str, str], Waiter] = {}
    for waiter in sorted(waiters, key=lambda w: w.seq):
        heads.setdefault((waiter.node, waiter.model), waiter)
    fitting = [w for pair, w in heads.items() if free.get(pair, 0) >= w.count]
    return min(fitting, key=lambda w: w.seq, default=None)


def positions(waiters: list[Waiter]) -> dict[str, int]:
    """Each waiter's place (1 = next) in its node and model's line."""
    seen: dict[tuple[str, str], int] = {}
    out = {}
    for waiter in sorted(waiters, key=lambda w: w.seq):
        pair = (waiter.node, waiter.model)
        seen[pair] = seen.get(pair, 0) + 1
        out[waiter.id] = seen[pair]
    return out


class GpusTaken(Conflict):
    """A start or create that found its GPUs taken: the refusal names the free count and
    the ways out, in words and (for the API's 409 body) as fields."""

    def __init__(self, node: str, model: str, needed: int, free: int, waiting: int, what: str = "start",
                 summary: str | None = None):
        """`summary`: what placement said (a create looks at every node); else the node's count."""
        ahead = f", and {waiting} queued request{'s' if waiting != 1 else ''} wait for them first" if waiting else ""
        summary = summary or f"only {free} {model} GPUs are free on node {node}, the instance needs {needed}"
        if what == "start":
            ways = ("`dockyard start ID --no-gpu` reaches the files without GPUs; `--queue` waits in line and "
                    "starts by itself when they are free; `--migrate` moves it to a node with free GPUs of its "
                    "model and starts it there")
        else:
            ways = ("`dockyard create --gpus 0` runs without GPUs; `--queue` waits in line and creates by "
                    "itself when they are free")
        super().__init__(f"{summary}{ahead}. Ways out: {ways}", field="gpu_count")
        self.details = {"node": node, "gpu_model": model, "needed": needed, "free": free, "waiting": waiting,
                        "ways_out": list(START_WAYS_OUT if what == "start" else CREATE_WAYS_OUT)}
