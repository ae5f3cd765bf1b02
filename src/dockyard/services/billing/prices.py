"""The price book: prices by kind, GPU model and node, each from a moment on (never
retroactively), and what a run costs per hour at a moment. Times are microseconds since
the epoch, as the ledger's windows are."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.config import Settings
from dockyard.core import billing as core
from dockyard.core.billing import US_PER_HOUR, PriceRow
from dockyard.core.errors import InvalidInput
from dockyard.core.sharing import MILLI
from dockyard.db.billing_models import PriceEntry
from dockyard.db.models import Gpu, Node, utcnow
from dockyard.services import audit

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
PRICE_KINDS = {"gpu": "per GPU per hour", "no_gpu": "per hour", "disk": "per GB per day", "image": "per GB per day"}
# Usage is priced per GPU-hour and held in GPU thousandths: its integrals are per this unit.
GPU_UNIT_US = US_PER_HOUR * MILLI


def to_us(value: datetime) -> int:
    return (value - EPOCH) // timedelta(microseconds=1)


def from_us(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def price_rows(db: Session) -> list[PriceRow]:
    return [
        PriceRow(kind=r.kind, model=r.model, node=r.node, effective_from=to_us(r.effective_from), price=r.price, id=r.id)
        for r in db.scalars(select(PriceEntry))
    ]


def set_price(db: Session, kind: str, price: object, model: str = "", node: str = "",
              effective_from: datetime | None = None, by: str | None = None) -> PriceEntry:
    if kind not in PRICE_KINDS:
        raise InvalidInput(f"kind: {kind!r} is not a price kind; use one of {', '.join(PRICE_KINDS)}", field="kind")
    minor = core.parse_amount(price, field="price")
    model, node = model or "", node or ""
    if kind == "gpu":
        if not model:
            raise InvalidInput("model: a GPU price needs a GPU model", field="model")
        if db.scalars(select(Gpu.id).where(Gpu.model == model).limit(1)).first() is None:
            known = ", ".join(sorted(set(db.scalars(select(Gpu.model))))) or "none"
            raise InvalidInput(f"model: unknown GPU model {model!r} (known: {known})", field="model")
    elif model:
        raise InvalidInput(f"model: a {kind} price takes no GPU model", field="model")
    if node and db.get(Node, node) is None:
        raise InvalidInput(f"node: unknown node {node!r}", field="node")
    now = utcnow()
    if effective_from is None:
        effective_from = now
    elif effective_from.tzinfo is None:
        raise InvalidInput("effective_from: give a time zone (e.g. 2026-12-01T00:00:00Z)", field="effective_from")
    elif effective_from < now - timedelta(seconds=1):
        raise InvalidInput("effective_from: a price change applies from now or later, never retroactively",
                           field="effective_from")
    entry = PriceEntry(kind=kind, model=model, node=node, price=minor, effective_from=effective_from, created_by=by)
    db.add(entry)
    db.flush()
    if by is not None:
        audit.record(db, by, "price.set", " ".join(filter(None, (kind, model, node))),
                     f"{core.format_amount(minor, 4)} from {effective_from.isoformat()}")
    return entry


def list_prices(db: Session, settings: Settings) -> list[dict]:
    now = to_us(utcnow())
    rows = price_rows(db)
    current = {}
    for row in rows:
        key = (row.kind, row.model, row.node)
        if row.effective_from <= now and (key not in current or (row.effective_from, row.id) > current[key]):
            current[key] = (row.effective_from, row.id)
    out = []
    for row in sorted(rows, key=lambda r: (r.kind, r.model, r.node, r.effective_from, r.id)):
        key = (row.kind, row.model, row.node)
        state = "current" if current.get(key) == (row.effective_from, row.id) else (
            "scheduled" if row.effective_from > now else "past")
        out.append({"kind": row.kind, "model": row.model or None, "node": row.node or None,
                    "price": core.format_amount(row.price, 4), "price_minor": row.price, "unit": PRICE_KINDS[row.kind],
                    "currency": settings.currency, "effective_from": from_us(row.effective_from), "state": state})
    return out


def hourly_price(rows: list[PriceRow], model: str, milli: int, node: str, no_gpu: bool, at_us: int) -> int:
    """Minor units per hour of an instance holding `milli` GPU thousandths (1000 a whole
    GPU, 500 a half) in a mode, at a moment (rounded down; the ledger charges exactly)."""
    if no_gpu or milli == 0:
        return core.rate_at(core.price_steps(rows, "no_gpu", "", node), at_us)
    return milli * core.rate_at(core.price_steps(rows, "gpu", model, node), at_us) // MILLI


def segment_steps(rows: list[PriceRow], seg) -> tuple[core.Steps, int]:
    """A run's price steps and multiplier, per GPU_UNIT_US: a GPU's price times its milli-GPUs."""
    if seg.no_gpu or seg.gpu_milli == 0:
        return core.price_steps(rows, "no_gpu", "", seg.node), MILLI
    return core.price_steps(rows, "gpu", seg.gpu_model, seg.node), seg.gpu_milli
