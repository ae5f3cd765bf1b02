"""The GPU market: per node and model, the GPUs for rent whole and the shares on offer."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.core.sharing import MIG, MPS, SPLIT_MODES, TIME_SLICING, format_fraction, offered_fractions, mig_milli
from dockyard.db.models import Gpu, GpuAssignment, GpuSlot, Node

# What each sharing mode keeps apart between the shares of one GPU (docs/gpu-sharing.md).
ISOLATION = {
    TIME_SLICING: "nothing: shares take turns on the whole GPU and see all its memory",
    MPS: "memory (an MPS limit per share), not faults: one share's GPU error stops the others",
    MIG: "memory and faults: each share is a MIG instance of its own",
}


@dataclass
class ShareOffer:
    share: str  # "0.5", "1g.18gb"
    milli: int  # the part of a GPU's price it costs, in thousandths
    free: int  # how many of it could be rented now


@dataclass
class MarketGroup:
    node: Node
    model: str
    memory_mb: int = 0
    total: int = 0
    free: int = 0  # free whole GPUs
    simulated: bool = False
    sharing: str | None = None
    shares: list[ShareOffer] = field(default_factory=list)


def market(db: Session) -> list[MarketGroup]:
    nodes = {n.name: n for n in db.scalars(select(Node))}
    held = set(db.scalars(select(GpuAssignment.slot_id)))
    slots: dict[int, list[GpuSlot]] = {}
    for slot in db.scalars(select(GpuSlot).order_by(GpuSlot.slot)):
        slots.setdefault(slot.gpu_id, []).append(slot)
    groups: dict[tuple[str, str], MarketGroup] = {}
    offers: dict[tuple[str, str], dict[str, ShareOffer]] = {}
    for gpu in db.scalars(select(Gpu).where(Gpu.present.is_(True)).order_by(Gpu.node_name, Gpu.model, Gpu.index)):
        node, key = nodes[gpu.node_name], (gpu.node_name, gpu.model)
        group = groups.setdefault(key, MarketGroup(node=node, model=gpu.model))
        group.memory_mb, group.total = max(group.memory_mb, gpu.memory_mb), group.total + 1
        group.simulated = group.simulated or gpu.simulated
        group.sharing = group.sharing or gpu.sharing
        own = slots.get(gpu.id, [])
        free = [s for s in own if s.id not in held] if node.online else []
        if gpu.sharing != MIG and own and len(free) == len(own):
            group.free += 1
        offered = offers.setdefault(key, {})
        if gpu.sharing in SPLIT_MODES:
            for fraction in offered_fractions(len(own)):
                label = format_fraction(fraction)
                offer = offered.setdefault(label, ShareOffer(label, int(fraction * 1000), 0))
                offer.free += len(free) // int(fraction * len(own))
        elif gpu.sharing == MIG:
            for slot in own:
                offer = offered.setdefault(slot.mig_profile, ShareOffer(slot.mig_profile, mig_milli(slot.mig_profile), 0))
                offer.free += slot in free
    for key, group in groups.items():
        group.shares = sorted(offers[key].values(), key=lambda o: (-o.milli, o.share))
    return list(groups.values())


def offer_rows(db: Session) -> list[dict]:
    """The market as plain rows, one per node and model: the API's answer (MarketRow) and
    the console's market page alike."""
    return [
        {"node": g.node.name, "model": g.model, "memory_mb": g.memory_mb, "total": g.total, "free": g.free,
         "simulated": g.simulated, "driver_version": g.node.driver_version, "cuda_version": g.node.cuda_version,
         "online": g.node.online, "sharing": g.sharing, "isolation": ISOLATION.get(g.sharing) if g.sharing else None,
         "shares": [{"share": o.share, "gpu_fraction": o.milli / 1000, "free": o.free} for o in g.shares]}
        for g in market(db)
    ]
