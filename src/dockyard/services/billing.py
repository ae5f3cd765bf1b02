"""Billing: price book, metering, settlement on a double-entry ledger, wallets,
vouchers, statements, and the invariant check. The arithmetic is in core/billing.py.

Metering reads instance_events: a run starts at an event whose to_status is 'running'
(written after the container really started) and ends at the next event where the
container stopped (to_status stopped, failed, released or lost; 'stopping' still runs). Runs
become rows of billing_segments, which never change afterwards but for their settlement
cursor. Each settlement posts aligned 60-second windows under keys such as
'usage:{segment}:{window_start}' in the same transaction that moves the cursor, so a
crash at any point and a replay post exactly the same rows.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, bindparam, false, func, insert, or_, select, update
from sqlalchemy.orm import Session

from dockyard.config import Settings
from dockyard.core import billing as core
from dockyard.core.billing import US, US_PER_DAY, US_PER_HOUR, PaymentRequired, PriceRow
from dockyard.core.sharing import MILLI, format_milli
from dockyard.core.errors import Conflict, InvalidInput, NotFound
from dockyard.db.billing_models import (Account, Notice, Posting, PriceEntry, StorageCursor, UsageSegment,
                                        VolumeStorageCursor, Voucher)
from dockyard.db.models import Gpu, Image, Instance, InstanceEvent, Meta, Node, User, Volume, utcnow
from dockyard.services import audit

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# 'lost' ends a run when its node was last seen (services/liveness.py).
END_STATUSES = ("stopped", "failed", "released", "lost")
PRICE_KINDS = {"gpu": "per GPU per hour", "no_gpu": "per hour", "disk": "per GB per day", "image": "per GB per day"}
REVENUE, RECHARGES, VOUCHERS = "platform:revenue", "platform:recharges", "platform:vouchers"
SCAN_META = "billing.scan_from_us"
IMAGES_META = "billing.images_until_us"
# Usage is priced per GPU-hour and held in GPU thousandths: its integrals are per this unit.
GPU_UNIT_US = US_PER_HOUR * MILLI
RESCAN_US = 300 * US  # events that commit up to this late are still found
_settle_lock = threading.Lock()


def to_us(value: datetime) -> int:
    return (value - EPOCH) // timedelta(microseconds=1)


def from_us(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def wallet(user_id: int) -> str:
    return f"user:{user_id}:wallet"


def voucher_account(user_id: int, voucher_id: int) -> str:
    return f"user:{user_id}:voucher:{voucher_id}"


def money(settings: Settings, minor: int) -> str:
    return f"{core.format_amount(minor)} {settings.currency}"


# ---- price book ---------------------------------------------------------------------------


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


def _segment_steps(rows: list[PriceRow], seg) -> tuple[core.Steps, int]:
    """A run's price steps and multiplier, per GPU_UNIT_US: a GPU's price times its milli-GPUs."""
    if seg.no_gpu or seg.gpu_milli == 0:
        return core.price_steps(rows, "no_gpu", "", seg.node), MILLI
    return core.price_steps(rows, "gpu", seg.gpu_model, seg.node), seg.gpu_milli


# ---- balances --------------------------------------------------------------------------------


def user_balance(db: Session, user_id: int) -> int:
    """Wallet plus vouchers (an expired voucher is drained to zero by the next settlement)."""
    return int(db.scalar(select(func.coalesce(func.sum(Account.balance), 0)).where(Account.user_id == user_id)) or 0)


def check_can_afford(db: Session, settings: Settings, user: User, model: str, milli: int, node: str,
                     no_gpu: bool = False) -> None:
    """Refuse a create/start when the balance cannot pay the configured minimum of minutes."""
    if not settings.billing_enabled:
        return
    price = hourly_price(price_rows(db), model, milli, node, no_gpu, to_us(utcnow()))
    if price == 0:
        return
    required = core.ceil_div(int(price * settings.min_balance_minutes * 60), 3600)
    balance = user_balance(db, user.id)
    available = balance + core.parse_amount(settings.credit_limit, "credit_limit")
    if available < max(required, 1):
        what = "no GPU" if (no_gpu or milli == 0) else f"{format_milli(milli)} x {model}"
        raise PaymentRequired(
            f"balance: {money(settings, balance)} cannot cover {settings.min_balance_minutes:g} minutes of this "
            f"instance ({what}) at {money(settings, price)}/hour, {money(settings, required)}; "
            f"ask an admin to recharge (`dockyard admin credit`)", field="balance")


def _apply(db: Session, rows: list[dict], accounts: dict[str, tuple[str, int | None]]) -> None:
    """Insert postings and move the account balances, in the caller's transaction.

    `accounts` names every account the rows touch with its (kind, user_id), so missing
    ones are opened. Balances move in account-name order (no deadlock between writers).
    """
    if not rows:
        return
    deltas: dict[str, int] = defaultdict(int)
    for row in rows:
        deltas[row["debit"]] -= row["amount"]
        deltas[row["credit"]] += row["amount"]
    names = sorted(deltas)
    existing = set()
    for start in range(0, len(names), 500):
        existing.update(db.scalars(select(Account.name).where(Account.name.in_(names[start:start + 500]))))
    missing = [n for n in names if n not in existing]
    if missing:
        db.execute(insert(Account), [
            {"name": n, "kind": accounts[n][0], "user_id": accounts[n][1], "balance": 0, "low_warned": False,
             "created_at": utcnow()} for n in missing])
    db.execute(insert(Posting), rows)
    moves = [{"n": n, "d": deltas[n]} for n in names if deltas[n]]
    if moves:
        db.execute(_balance_update(), moves)


def _balance_update():
    return (
        update(Account.__table__)
        .where(Account.__table__.c.name == bindparam("n"))
        .values(balance=Account.__table__.c.balance + bindparam("d"))
    )


def _system_accounts() -> dict[str, tuple[str, int | None]]:
    return {REVENUE: ("revenue", None), RECHARGES: ("recharges", None), VOUCHERS: ("vouchers", None)}


def _find_user(db: Session, name: str) -> User:
    user = db.scalars(select(User).where(User.name == name)).one_or_none()
    if user is None:
        raise NotFound(f"user: unknown user {name!r}", field="user")
    return user


def recharge(db: Session, user_name: str, amount: object, by: str, request_id: str | None = None) -> Posting:
    """An admin credits a user's wallet. `request_id` makes a retry harmless."""
    minor = core.parse_amount(amount, allow_zero=False)
    user = _find_user(db, user_name)
    key = f"recharge:{request_id or secrets.token_hex(8)}"
    if len(key) > 128:
        raise InvalidInput("request_id: at most 100 characters", field="request_id")
    done = db.scalars(select(Posting).where(Posting.key == key)).one_or_none()
    if done is not None:
        if done.amount != minor or done.credit != wallet(user.id):
            raise Conflict("request_id: already used for another recharge", field="request_id")
        return done
    accounts = {**_system_accounts(), wallet(user.id): ("wallet", user.id)}
    _apply(db, [_row(key, "recharge", RECHARGES, wallet(user.id), minor, user.id, memo=f"recharge by {by}")], accounts)
    audit.record(db, by, "wallet.recharge", user.name, core.format_amount(minor))
    return db.scalars(select(Posting).where(Posting.key == key)).one()


def grant_voucher(db: Session, user_name: str, amount: object, expires_at: datetime, by: str) -> Voucher:
    minor = core.parse_amount(amount, allow_zero=False)
    user = _find_user(db, user_name)
    if expires_at.tzinfo is None:
        raise InvalidInput("expires_at: give a time zone (e.g. 2026-12-31T00:00:00Z)", field="expires_at")
    if expires_at <= utcnow():
        raise InvalidInput(f"expires_at: {expires_at.isoformat()} is in the past; a voucher must expire later",
                           field="expires_at")
    voucher = Voucher(user_id=user.id, amount=minor, expires_at=expires_at, created_by=by)
    db.add(voucher)
    db.flush()
    account = voucher_account(user.id, voucher.id)
    _apply(db, [_row(f"voucher:{voucher.id}", "voucher", VOUCHERS, account, minor, user.id,
                     memo=f"voucher until {expires_at.isoformat()} by {by}")],
           {**_system_accounts(), account: ("voucher", user.id)})
    audit.record(db, by, "wallet.voucher", user.name, f"{core.format_amount(minor)} until {expires_at.isoformat()}")
    return voucher


def _row(key: str, kind: str, debit: str, credit: str, amount: int, user_id: int | None, *, instance_id=None,
         segment_id=None, period_start=None, period_end=None, usage_us=None, memo=None) -> dict:
    return {"key": key, "kind": kind, "debit": debit, "credit": credit, "amount": amount, "user_id": user_id,
            "instance_id": instance_id, "segment_id": segment_id,
            "period_start": from_us(period_start) if period_start is not None else None,
            "period_end": from_us(period_end) if period_end is not None else None,
            "usage_us": usage_us, "memo": memo, "created_at": utcnow()}


# ---- settlement ------------------------------------------------------------------------------


@dataclass
class SettleReport:
    opened: int = 0
    closed: int = 0
    postings: int = 0
    charged: int = 0
    chunks: int = 0
    stopped: list[str] = field(default_factory=list)
    warned: list[int] = field(default_factory=list)


def settle(platform, now: datetime | None = None, driver=None) -> SettleReport:
    """One settlement cycle: derive runs from events, post their windows up to `now` less
    the lag, charge storage, expire vouchers, then warn and stop on low balances."""
    with _settle_lock:
        settings: Settings = platform.settings
        horizon = to_us(now or utcnow()) - int(settings.settle_lag_s * US)
        report = SettleReport()
        derive_segments(platform, horizon, report)
        with platform.sessions.begin() as db:
            rows = price_rows(db)
        settle_usage(platform, horizon, rows, report)
        settle_storage(platform, horizon, rows, report)
        expire_vouchers(platform, horizon, report)
        enforce(platform, rows, horizon, report, driver)
        return report


def _run_mode(cause: str, instance_no_gpu: bool, gpu_count: int) -> bool:
    """Whether a run was without GPUs, from what the driver wrote when it started it."""
    if gpu_count == 0:
        return True
    if cause.startswith("container started"):
        return "without GPUs" in cause
    return bool(instance_no_gpu)


def derive_segments(platform, horizon: int, report: SettleReport) -> None:
    with platform.sessions.begin() as db:
        meta = db.get(Meta, SCAN_META)
        E = InstanceEvent
        query = (
            select(E.id, E.instance_id, E.at, E.cause, Instance.owner_id, Instance.node_name, Instance.gpu_model,
                   Instance.gpu_count, Instance.gpu_milli, Instance.no_gpu)
            .join(Instance, Instance.id == E.instance_id)
            .outerjoin(UsageSegment, UsageSegment.start_event_id == E.id)
            .where(E.to_status == "running", or_(E.from_status.is_(None), E.from_status != "running"),
                   E.at <= from_us(horizon), UsageSegment.id.is_(None))
        )
        if meta is not None:
            query = query.where(E.at > from_us(int(meta.value) - RESCAN_US))
        new = [
            {"instance_id": r.instance_id, "user_id": r.owner_id, "start_event_id": r.id, "started_at": r.at,
             "node": r.node_name, "gpu_model": r.gpu_model, "gpu_count": r.gpu_count,
             "gpu_milli": r.gpu_milli, "no_gpu": _run_mode(r.cause, r.no_gpu, r.gpu_count), "settled_until": r.at, "done": False}
            for r in db.execute(query.order_by(E.id))
        ]
        if new:
            db.execute(insert(UsageSegment), new)
            report.opened += len(new)
        ends = (
            select(UsageSegment.id.label("segment_id"), func.min(E.id).label("event_id"))
            .join(E, and_(E.instance_id == UsageSegment.instance_id, E.id > UsageSegment.start_event_id))
            .where(UsageSegment.ended_at.is_(None), E.to_status.in_(END_STATUSES), E.at <= from_us(horizon))
            .group_by(UsageSegment.id)
            .subquery()
        )
        closing = db.execute(
            select(ends.c.segment_id, ends.c.event_id, E.at, UsageSegment.settled_until)
            .join(E, E.id == ends.c.event_id)
            .join(UsageSegment, UsageSegment.id == ends.c.segment_id)
        ).all()
        updates = []
        for seg_id, event_id, at, settled_until in closing:
            if at < settled_until:  # committed later than the lag allows: never un-charge
                log.warning("segment %s ended at %s, before its settled time %s", seg_id, at, settled_until)
                at = settled_until
            updates.append({"sid": seg_id, "eid": event_id, "end": at})
        if updates:
            t = UsageSegment.__table__
            db.execute(update(t).where(t.c.id == bindparam("sid")).values(end_event_id=bindparam("eid"),
                                                                             ended_at=bindparam("end")), updates)
            report.closed += len(updates)
        if meta is None:
            db.add(Meta(key=SCAN_META, value=str(horizon)))
        elif int(meta.value) < horizon:
            meta.value = str(horizon)


def _live_vouchers(db: Session, user_ids: set[int]) -> dict[int, list[list]]:
    """Per user: [account, balance, expires_us] of vouchers not yet expired, soonest first."""
    out: dict[int, list[list]] = defaultdict(list)
    if not user_ids:
        return out
    ids = sorted(user_ids)
    for start in range(0, len(ids), 500):
        found = db.execute(select(Voucher.id, Voucher.user_id, Voucher.expires_at)
                           .where(Voucher.user_id.in_(ids[start:start + 500]), Voucher.expired.is_(False))
                           .order_by(Voucher.expires_at, Voucher.id)).all()
        if not found:
            continue
        balances = dict(db.execute(select(Account.name, Account.balance).where(
            Account.name.in_([voucher_account(uid, vid) for vid, uid, _ in found]))).all())
        for vid, uid, expires in found:
            balance = balances.get(voucher_account(uid, vid), 0)
            if balance > 0:
                out[uid].append([voucher_account(uid, vid), balance, to_us(expires)])
    return out


def _charge_rows(key: str, kind: str, amount: int, user_id: int, vouchers: list[list], period_start: int,
                 **extra) -> list[dict]:
    """Postings for one charge: vouchers valid at the period's start first, then the wallet
    (the wallet leg always exists and carries the usage). Voucher balances move in place."""
    usable = [(v[0], v[1]) for v in vouchers if v[2] > period_start and v[1] > 0]
    legs = core.split_charge(amount, usable, wallet(user_id))
    rows = []
    for account, part in legs:
        if account == wallet(user_id):
            rows.append(_row(key, kind, account, REVENUE, part, user_id, period_start=period_start, **extra))
        else:
            for v in vouchers:
                if v[0] == account:
                    v[1] -= part
            leg_extra = {**extra, "usage_us": None}
            rows.append(_row(f"{key}:v{account.rsplit(':', 1)[1]}", kind, account, REVENUE, part, user_id,
                             period_start=period_start, **leg_extra))
    return rows


def _accounts_for(rows: list[dict]) -> dict[str, tuple[str, int | None]]:
    accounts = _system_accounts()
    for row in rows:
        for name in (row["debit"], row["credit"]):
            if name.startswith("user:"):
                accounts[name] = ("voucher" if ":voucher:" in name else "wallet", row["user_id"])
    return accounts


def _after_chunk(platform, report: SettleReport) -> None:
    report.chunks += 1
    crash = platform.settings.billing_crash_after_chunks
    if crash is not None and report.chunks >= crash:
        log.error("billing_crash_after_chunks=%s: killing this process now (fault injection)", crash)
        os.kill(os.getpid(), signal.SIGKILL)


def settle_usage(platform, horizon: int, rows: list[PriceRow], report: SettleReport) -> None:
    settings: Settings = platform.settings
    chunk = settings.settle_chunk
    last_id = 0
    steps_cache: dict[tuple, tuple[core.Steps, int]] = {}
    t = UsageSegment.__table__
    seg_update = update(t).where(t.c.id == bindparam("sid")).values(settled_until=bindparam("until"),
                                                                     done=bindparam("is_done"))
    while True:
        with platform.sessions.begin() as db:
            segs = db.execute(
                select(t.c.id, t.c.instance_id, t.c.user_id, t.c.started_at, t.c.ended_at, t.c.settled_until,
                       t.c.node, t.c.gpu_model, t.c.gpu_milli, t.c.no_gpu)
                .where(t.c.done.is_(False), t.c.id > last_id).order_by(t.c.id).limit(chunk)
            ).all()
            if not segs:
                return
            last_id = segs[-1].id
            # An open run is charged no further than its node was last seen answering: if
            # the node has vanished, the run ends there once it is declared lost.
            seen = {name: to_us(at) for name, at in db.execute(select(Node.name, Node.last_seen_at)) if at}
            work = []
            for seg in segs:
                closed = seg.ended_at is not None
                limit = to_us(seg.ended_at) if closed else min(horizon, seen.get(seg.node, horizon))
                until = to_us(seg.settled_until)
                mode = (seg.no_gpu or seg.gpu_milli == 0, seg.gpu_model, seg.gpu_milli, seg.node)
                if mode not in steps_cache:
                    steps_cache[mode] = _segment_steps(rows, seg)
                steps, multiplier = steps_cache[mode]
                found = core.windows(steps, multiplier, to_us(seg.started_at), until, limit, closed,
                                     unit_us=GPU_UNIT_US)
                if found or (closed and until >= limit):
                    work.append((seg, found, closed))
            if not work:
                continue
            payers = {seg.user_id for seg, found, _ in work if any(w.amount for w in found)}
            vouchers = _live_vouchers(db, payers) if settings.billing_enabled else {}
            postings, seg_updates = [], []
            for seg, found, closed in work:
                for w in found:
                    amount = w.amount if settings.billing_enabled else 0
                    postings.extend(_charge_rows(
                        f"usage:{seg.id}:{w.key}", "usage", amount, seg.user_id, vouchers.get(seg.user_id, []),
                        w.start, instance_id=seg.instance_id, segment_id=seg.id, period_end=w.end,
                        usage_us=w.end - w.start))
                    report.charged += amount
                end = found[-1].end if found else to_us(seg.settled_until)
                seg_updates.append({"sid": seg.id, "until": from_us(end), "is_done": closed and end >= to_us(seg.ended_at)})
            _apply(db, postings, _accounts_for(postings))
            db.execute(seg_update, seg_updates)
            report.postings += len(postings)
        _after_chunk(platform, report)


@dataclass
class _Disk:
    """Something charged per GB per day from `created_at` until `ended_at`."""

    key: str  # the postings' key prefix
    owner_id: int
    node: str
    gb: int
    created_at: datetime
    settled_until: datetime
    ended_at: datetime | None
    memo: str
    instance_id: str | None = None


def _charge_disk(d: _Disk, rows: list[PriceRow], settings: Settings, horizon: int, vouchers: dict,
                 postings: list, report: SettleReport) -> tuple[datetime, bool] | None:
    """Post the storage periods of one disk that are due; (settled until, done) when its
    cursor moves, else None."""
    ended = d.ended_at is not None and to_us(d.ended_at) <= horizon
    limit = to_us(d.ended_at) if ended else horizon
    until = to_us(d.settled_until)
    steps = core.price_steps(rows, "disk", "", d.node) if d.gb else ()
    found = core.windows(steps, d.gb, to_us(d.created_at), until, limit, ended, unit_us=US_PER_DAY,
                         window_s=settings.storage_period_s)
    for w in found:
        amount = w.amount if settings.billing_enabled else 0
        if amount:
            postings.extend(_charge_rows(f"{d.key}:{w.key}", "storage", amount, d.owner_id,
                                         vouchers.get(d.owner_id, []), w.start, instance_id=d.instance_id,
                                         period_end=w.end, usage_us=w.end - w.start, memo=d.memo))
            report.charged += amount
    end = found[-1].end if found else until
    if found or d.ended_at is not None:
        return from_us(end), ended and end >= limit
    return None


def settle_storage(platform, horizon: int, rows: list[PriceRow], report: SettleReport) -> None:
    """Disks are charged per storage period (a UTC day by default): data disk GB beyond the
    free allowance and every GB of a volume at the disk price; saved images at the image price."""
    settings: Settings = platform.settings
    has_disk_price = any(r.kind == "disk" for r in rows)
    with platform.sessions.begin() as db:
        # Open a cursor for every instance and volume that has none: storage counts from creation.
        db.execute(insert(StorageCursor).from_select(
            ["instance_id", "settled_until", "done"],
            select(Instance.id, Instance.created_at, false())
            .outerjoin(StorageCursor, StorageCursor.instance_id == Instance.id)
            .where(StorageCursor.instance_id.is_(None)),
        ))
        db.execute(insert(VolumeStorageCursor).from_select(
            ["volume_id", "settled_until", "done"],
            select(Volume.id, Volume.created_at, false())
            .outerjoin(VolumeStorageCursor, VolumeStorageCursor.volume_id == Volume.id)
            .where(VolumeStorageCursor.volume_id.is_(None)),
        ))
        pending = db.execute(
            select(StorageCursor.instance_id, StorageCursor.settled_until, Instance.created_at, Instance.released_at,
                   Instance.data_disk_gb, Instance.owner_id, Instance.node_name, Instance.status)
            .join(Instance, Instance.id == StorageCursor.instance_id)
            .where(StorageCursor.done.is_(False),
                   # Disks within the free allowance never pay: only their release is recorded.
                   or_(Instance.data_disk_gb > settings.free_data_disk_gb, Instance.status == "released"))
        ).all()
        pending_volumes = db.execute(
            select(VolumeStorageCursor.volume_id, VolumeStorageCursor.settled_until, Volume.created_at,
                   Volume.deleted_at, Volume.size_gb, Volume.owner_id, Volume.node_name, Volume.name)
            .join(Volume, Volume.id == VolumeStorageCursor.volume_id)
            .where(VolumeStorageCursor.done.is_(False))
        ).all()
        postings, cursor_updates, volume_updates = [], [], []
        payers = {p.owner_id for p in pending} | {p.owner_id for p in pending_volumes}
        vouchers = _live_vouchers(db, payers) if (settings.billing_enabled and has_disk_price) else {}
        free = settings.free_data_disk_gb
        for p in pending:
            gb = max(0, p.data_disk_gb - free)
            moved = _charge_disk(_Disk(f"storage:{p.instance_id}", p.owner_id, p.node_name, gb, p.created_at,
                                       p.settled_until, p.released_at, f"data disk {gb} GB beyond the free {free} GB",
                                       instance_id=p.instance_id), rows, settings, horizon, vouchers, postings, report)
            if moved:
                cursor_updates.append({"row_id": p.instance_id, "until": moved[0], "is_done": moved[1]})
        for p in pending_volumes:
            moved = _charge_disk(_Disk(f"volume-storage:{p.volume_id}", p.owner_id, p.node_name, p.size_gb,
                                       p.created_at, p.settled_until, p.deleted_at, f"volume {p.name} {p.size_gb} GB"),
                                 rows, settings, horizon, vouchers, postings, report)
            if moved:
                volume_updates.append({"row_id": p.volume_id, "until": moved[0], "is_done": moved[1]})
        _apply(db, postings, _accounts_for(postings))
        for table, key, updates in ((StorageCursor.__table__, "instance_id", cursor_updates),
                                    (VolumeStorageCursor.__table__, "volume_id", volume_updates)):
            if updates:
                db.execute(update(table).where(table.c[key] == bindparam("row_id"))
                           .values(settled_until=bindparam("until"), done=bindparam("is_done")), updates)
        report.postings += len(postings)
        _settle_images(db, settings, rows, horizon, report)


def _settle_images(db: Session, settings: Settings, rows: list[PriceRow], horizon: int, report: SettleReport) -> None:
    """Saved images, per complete storage period, for the images that exist when it is settled."""
    period = settings.storage_period_s * US
    meta = db.get(Meta, IMAGES_META)
    last_end = horizon // period * period
    if meta is None:
        db.add(Meta(key=IMAGES_META, value=str(last_end)))
        return
    start = int(meta.value)
    if start >= last_end:
        return
    steps = core.price_steps(rows, "image")
    images = db.execute(select(Image.id, Image.owner_id, Image.size_bytes, Image.created_at)
                        .where(Image.kind == "saved", Image.status == "ready", Image.owner_id.is_not(None),
                               Image.size_bytes.is_not(None))).all()
    postings = []
    if steps and settings.billing_enabled:
        vouchers = _live_vouchers(db, {i.owner_id for i in images})
        for p_start in range(start, last_end, period):
            for image in images:
                origin = max(to_us(image.created_at), p_start)
                if origin >= p_start + period:
                    continue
                gb_milli = (image.size_bytes * 1000) // 2**30  # thousandths of a GB
                amount = core.cum_floor(steps, gb_milli, US_PER_DAY * 1000, origin, p_start + period)
                if amount:
                    postings.extend(_charge_rows(f"image-storage:{image.id}:{p_start // US}", "storage", amount,
                                                 image.owner_id, vouchers.get(image.owner_id, []), origin,
                                                 period_end=p_start + period, memo=f"saved image {image.id}"))
                    report.charged += amount
    _apply(db, postings, _accounts_for(postings))
    report.postings += len(postings)
    meta.value = str(last_end)


def expire_vouchers(platform, horizon: int, report: SettleReport) -> None:
    with platform.sessions.begin() as db:
        due = db.scalars(select(Voucher).where(Voucher.expired.is_(False), Voucher.expires_at <= from_us(horizon))).all()
        if not due:
            return
        balances = dict(db.execute(select(Account.name, Account.balance).where(
            Account.name.in_([voucher_account(v.user_id, v.id) for v in due]))).all())
        postings = []
        for v in due:
            account = voucher_account(v.user_id, v.id)
            postings.append(_row(f"voucher-expiry:{v.id}", "expiry", account, VOUCHERS, max(0, balances.get(account, 0)),
                                 v.user_id, memo="voucher expired"))
            v.expired = True
        _apply(db, postings, _accounts_for(postings))
        report.postings += len(postings)


def enforce(platform, rows: list[PriceRow], horizon: int, report: SettleReport, driver=None) -> None:
    """Warn below the threshold (or one hour of current spend); stop the user's paying
    running instances at zero or the credit limit. Stopping never releases."""
    settings: Settings = platform.settings
    if not settings.billing_enabled:
        return
    from dockyard.core.states import Status
    from dockyard.services.lifecycle import transition

    now = to_us(utcnow())
    threshold = core.parse_amount(settings.low_balance_threshold, "low_balance_threshold")
    floor = -core.parse_amount(settings.credit_limit, "credit_limit")
    to_stop: list[tuple[str, str]] = []
    with platform.sessions.begin() as db:
        running = db.execute(select(Instance.id, Instance.owner_id, Instance.gpu_model, Instance.gpu_milli,
                                    Instance.node_name, Instance.no_gpu)
                             .where(Instance.status == Status.RUNNING)).all()
        rate: dict[int, int] = defaultdict(int)
        paying: dict[int, list[str]] = defaultdict(list)
        prices: dict[tuple, int] = {}
        for r in running:
            mode = (r.gpu_model, r.gpu_milli, r.node_name, r.no_gpu)
            if mode not in prices:
                prices[mode] = hourly_price(rows, *mode, now)
            price = prices[mode]
            if price:
                rate[r.owner_id] += price
                paying[r.owner_id].append(r.id)
        # Usage accrued in windows not posted yet (the current minute) counts against the balance.
        pending: dict[int, int] = defaultdict(int)
        steps_cache: dict[tuple, tuple[core.Steps, int]] = {}
        for seg in db.execute(select(UsageSegment.user_id, UsageSegment.started_at, UsageSegment.settled_until,
                                     UsageSegment.node, UsageSegment.gpu_model, UsageSegment.gpu_milli,
                                     UsageSegment.no_gpu).where(UsageSegment.ended_at.is_(None))):
            if seg.user_id in rate:
                mode = (seg.no_gpu or seg.gpu_milli == 0, seg.gpu_model, seg.gpu_milli, seg.node)
                if mode not in steps_cache:
                    steps_cache[mode] = _segment_steps(rows, seg)
                steps, multiplier = steps_cache[mode]
                origin, until = to_us(seg.started_at), to_us(seg.settled_until)
                pending[seg.user_id] += (core.cum_floor(steps, multiplier, GPU_UNIT_US, origin, max(until, horizon))
                                         - core.cum_floor(steps, multiplier, GPU_UNIT_US, origin, until))
        warned_users = set(db.scalars(select(Account.user_id).where(Account.kind == "wallet", Account.low_warned.is_(True))))
        users = set(rate) | warned_users
        balances = dict(db.execute(select(Account.user_id, func.sum(Account.balance))
                                   .where(Account.user_id.in_(sorted(users))).group_by(Account.user_id)).all()) if users else {}
        for uid in sorted(users):
            balance = int(balances.get(uid, 0) or 0) - pending.get(uid, 0)
            limit = max(threshold, rate.get(uid, 0))
            if uid in warned_users and (balance >= limit or not rate.get(uid)):
                db.execute(update(Account).where(Account.name == wallet(uid)).values(low_warned=False))
                continue
            if not rate.get(uid):
                continue
            if balance <= floor:
                why = (f"balance {money(settings, balance)} reached the credit limit; "
                       f"instances stopped (not released) until a recharge")
                db.add(Notice(user_id=uid, kind="stopped", message=why))
                to_stop.extend((iid, why) for iid in paying[uid])
            elif balance < limit and uid not in warned_users:
                db.add(Notice(user_id=uid, kind="low_balance", message=(
                    f"low balance: {money(settings, balance)} left, spending {money(settings, rate[uid])}/hour")))
                wallet_row = db.get(Account, wallet(uid))
                if wallet_row is None:
                    db.add(Account(name=wallet(uid), kind="wallet", user_id=uid, balance=0, low_warned=True))
                else:
                    wallet_row.low_warned = True
                report.warned.append(uid)
    for instance_id, why in to_stop:
        if transition(platform, instance_id, Status.RUNNING, Status.STOPPING, f"stop: {why}"):
            report.stopped.append(instance_id)
            if driver is not None:
                driver.kick(instance_id)


# ---- reading ---------------------------------------------------------------------------------


def instance_costs(db: Session, settings: Settings, instance: Instance) -> tuple[str, str]:
    """An instance's price per hour in its current mode, and what it has been charged."""
    price = hourly_price(price_rows(db), instance.gpu_model, instance.gpu_milli, instance.node_name, instance.no_gpu,
                         to_us(utcnow()))
    cost = db.scalar(select(func.coalesce(func.sum(Posting.amount), 0))
                     .where(Posting.instance_id == instance.id, Posting.kind.in_(("usage", "storage"))))
    return core.format_amount(price), core.format_amount(int(cost or 0))


def balance_view(db: Session, settings: Settings, user: User) -> dict:
    rows = price_rows(db)
    now = to_us(utcnow())
    accounts = {a.name: a for a in db.scalars(select(Account).where(Account.user_id == user.id))}
    vouchers = []
    for v in db.scalars(select(Voucher).where(Voucher.user_id == user.id).order_by(Voucher.expires_at)):
        acct = accounts.get(voucher_account(user.id, v.id))
        vouchers.append({"id": v.id, "amount": core.format_amount(v.amount),
                         "balance": core.format_amount(acct.balance if acct else 0), "expires_at": v.expires_at,
                         "expired": v.expired or v.expires_at <= utcnow()})
    instances = []
    rate = 0
    for i in db.scalars(select(Instance).where(Instance.owner_id == user.id, Instance.status != "released")
                        .order_by(Instance.created_at)):
        price = hourly_price(rows, i.gpu_model, i.gpu_milli, i.node_name, i.no_gpu, now)
        if i.status in ("running", "stopping"):
            rate += price
        cost = db.scalar(select(func.coalesce(func.sum(Posting.amount), 0)).where(Posting.instance_id == i.id))
        instances.append({"id": i.id, "name": i.name, "status": i.status, "price_per_hour": core.format_amount(price),
                          "cost_so_far": core.format_amount(int(cost or 0))})
    balance = sum(a.balance for a in accounts.values())
    notices = db.scalars(select(Notice).where(Notice.user_id == user.id).order_by(Notice.id.desc()).limit(10)).all()
    return {
        "user": user.name, "currency": settings.currency, "billing_enabled": settings.billing_enabled,
        "balance": core.format_amount(balance), "balance_minor": balance,
        "wallet": core.format_amount(accounts[wallet(user.id)].balance if wallet(user.id) in accounts else 0),
        "vouchers": vouchers, "running_cost_per_hour": core.format_amount(rate), "instances": instances,
        "notices": [{"at": n.at, "kind": n.kind, "message": n.message} for n in notices],
    }


def parse_month(month: str | None) -> tuple[datetime, datetime, str]:
    if month is None:
        now = utcnow()
        month = f"{now.year:04d}-{now.month:02d}"
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=timezone.utc)
    except ValueError:
        raise InvalidInput(f"month: {month!r} is not YYYY-MM", field="month") from None
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end, month


def statement(db: Session, settings: Settings, user: User, month: str | None) -> dict:
    """What a user was charged in a month, by day and instance."""
    start, end, month = parse_month(month)
    names = dict(db.execute(select(Instance.id, Instance.name).where(Instance.owner_id == user.id)).all())
    lines: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    query = (select(Posting.period_start, Posting.instance_id, Posting.kind, Posting.amount, Posting.usage_us, Posting.memo)
             .where(Posting.user_id == user.id, Posting.kind.in_(("usage", "storage")),
                    Posting.period_start >= start, Posting.period_start < end))
    for period_start, instance_id, kind, amount, usage_us, memo in db.execute(query):
        what = instance_id or (memo or "storage")
        line = lines[(period_start.date().isoformat(), what, kind)]
        line[0] += amount
        line[1] += (usage_us or 0) if kind == "usage" else 0
    rows = [{"day": day, "instance_id": iid if iid in names else None, "instance": names.get(iid, iid), "kind": kind,
             "seconds": round(usage / US, 3), "amount": core.format_amount(amount), "amount_minor": amount}
            for (day, iid, kind), (amount, usage) in sorted(lines.items())]
    total = sum(r["amount_minor"] for r in rows)
    return {"user": user.name, "month": month, "currency": settings.currency, "rows": rows,
            "total": core.format_amount(total), "total_minor": total}


def postings(db: Session, user: User | None = None, instance_id: str | None = None, kind: str | None = None,
             limit: int = 10_000) -> list[Posting]:
    query = select(Posting).order_by(Posting.id).limit(limit)
    if user is not None:
        query = query.where(Posting.user_id == user.id)
    if instance_id:
        query = query.where(Posting.instance_id == instance_id)
    if kind:
        query = query.where(Posting.kind == kind)
    return list(db.scalars(query))


# ---- verification ---------------------------------------------------------------------------


def verify_now(platform) -> dict:
    """verify() on one snapshot of the books. On PostgreSQL a READ COMMITTED transaction sees
    each statement's own: a settlement committing between the sums of postings and the read of
    balances would show as a broken ledger. SQLite's transactions already see one snapshot."""
    with platform.sessions.begin() as db:
        if db.get_bind().dialect.name == "postgresql":
            db.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        return verify(db, platform.settings)


def verify(db: Session, settings: Settings) -> dict:
    """The ledger's invariants: balances equal their postings, money is conserved, and every
    run is covered by its windows exactly once, each charged what the price book says."""
    problems: list[str] = []
    P = Posting
    if db.scalar(select(func.count()).select_from(P).where(P.amount < 0)):
        problems.append("postings with a negative amount")
    if db.scalar(select(func.count()).select_from(P).where(P.debit == P.credit)):
        problems.append("postings from an account to itself")
    derived: dict[str, int] = defaultdict(int)
    for name, total in db.execute(select(P.credit, func.sum(P.amount)).group_by(P.credit)):
        derived[name] += int(total)
    for name, total in db.execute(select(P.debit, func.sum(P.amount)).group_by(P.debit)):
        derived[name] -= int(total)
    stored = dict(db.execute(select(Account.name, Account.balance)).all())
    for name in sorted(set(derived) | set(stored)):
        if name not in stored:
            problems.append(f"account {name} has postings but no balance row")
        elif stored[name] != derived.get(name, 0):
            problems.append(f"account {name}: balance {stored[name]} but its postings sum to {derived.get(name, 0)}")
    if sum(stored.values()) != 0:
        problems.append(f"balances sum to {sum(stored.values())}, not 0: money was made or lost")
    debits = db.scalar(select(func.coalesce(func.sum(P.amount), 0)))
    rows = price_rows(db)
    windows_by_segment: dict[int, list[tuple[int, int]]] = defaultdict(list)
    charged: dict[int, int] = defaultdict(int)
    for seg_id, start, end, amount, usage in db.execute(
            select(P.segment_id, P.period_start, P.period_end, P.amount, P.usage_us)
            .where(P.kind == "usage", P.segment_id.is_not(None))):
        charged[seg_id] += amount
        if usage is not None:  # the wallet leg: one per window
            windows_by_segment[seg_id].append((to_us(start), to_us(end)))
    segments = db.execute(select(UsageSegment)).scalars().all()
    known = {s.id for s in segments}
    for seg_id in set(windows_by_segment) - known:
        problems.append(f"usage postings for unknown segment {seg_id}")
    for seg in segments:
        origin, until = to_us(seg.started_at), to_us(seg.settled_until)
        wrong = core.check_coverage(origin, windows_by_segment.get(seg.id, []), until)
        if wrong:
            problems.append(f"segment {seg.id} (instance {seg.instance_id}): {wrong}")
        if seg.done and (seg.ended_at is None or until != to_us(seg.ended_at)):
            problems.append(f"segment {seg.id} is done but not settled to its end")
        if settings.billing_enabled:
            steps, multiplier = _segment_steps(rows, seg)
            expected = core.cum_floor(steps, multiplier, GPU_UNIT_US, origin, until)
            if charged.get(seg.id, 0) != expected:
                problems.append(f"segment {seg.id}: charged {charged.get(seg.id, 0)}, its price integral is {expected}")
    storage: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for iid, start, end in db.execute(select(P.instance_id, P.period_start, P.period_end)
                                      .where(P.kind == "storage", P.instance_id.is_not(None), P.usage_us.is_not(None))):
        storage[iid].append((to_us(start), to_us(end)))
    for iid, periods in storage.items():
        periods.sort()
        for (s1, e1), (s2, e2) in zip(periods, periods[1:]):
            if s2 < e1:
                problems.append(f"instance {iid}: storage periods overlap at {from_us(s2).isoformat()}")
    return {"ok": not problems, "problems": problems, "accounts": len(stored),
            "postings": db.scalar(select(func.count()).select_from(P)), "segments": len(segments),
            "total_moved": core.format_amount(int(debits or 0)), "currency": settings.currency}
