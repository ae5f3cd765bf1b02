"""Settlement: metering, storage charges and voucher expiry, then enforcement.

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
import signal
import threading
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, bindparam, false, func, insert, or_, select, update
from sqlalchemy.orm import Session

from dockyard.config import Settings
from dockyard.core import billing as core
from dockyard.core.billing import US, US_PER_DAY, PriceRow
from dockyard.core.kinds import ImageKind, PostingKind
from dockyard.db.billing_models import Account, StorageCursor, UsageSegment, VolumeStorageCursor, Voucher
from dockyard.db.models import Image, Instance, InstanceEvent, Meta, Node, Volume, utcnow
from dockyard.services.billing import enforcement, ledger
from dockyard.services.billing.prices import GPU_UNIT_US, from_us, price_rows, segment_steps, to_us

log = logging.getLogger(__name__)

# 'lost' ends a run when its node was last seen (services/liveness.py).
END_STATUSES = ("stopped", "failed", "released", "lost")
SCAN_META = "billing.scan_from_us"
IMAGES_META = "billing.images_until_us"
RESCAN_US = 300 * US  # events that commit up to this late are still found
_settle_lock = threading.Lock()


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
        warned, stopped = enforcement.enforce(platform, rows, horizon, driver)
        report.warned.extend(warned)
        report.stopped.extend(stopped)
        return report


def derive_segments(platform, horizon: int, report: SettleReport) -> None:
    with platform.sessions.begin() as db:
        meta = db.get(Meta, SCAN_META)
        E = InstanceEvent
        query = (
            select(E.id, E.instance_id, E.at, E.with_gpus, Instance.owner_id, Instance.node_name,
                   Instance.gpu_model, Instance.gpu_count, Instance.gpu_milli)
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
             "gpu_milli": r.gpu_milli, "no_gpu": r.gpu_count == 0 or not r.with_gpus,
             "settled_until": r.at, "done": False}
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
                    steps_cache[mode] = segment_steps(rows, seg)
                steps, multiplier = steps_cache[mode]
                found = core.windows(steps, multiplier, to_us(seg.started_at), until, limit, closed,
                                     unit_us=GPU_UNIT_US)
                if found or (closed and until >= limit):
                    work.append((seg, found, closed))
            if not work:
                continue
            payers = {seg.user_id for seg, found, _ in work if any(w.amount for w in found)}
            vouchers = ledger.live_vouchers(db, payers) if settings.billing_enabled else {}
            postings, seg_updates = [], []
            for seg, found, closed in work:
                for w in found:
                    amount = w.amount if settings.billing_enabled else 0
                    postings.extend(ledger.charge_rows(
                        f"usage:{seg.id}:{w.key}", PostingKind.USAGE, amount, seg.user_id, vouchers.get(seg.user_id, []),
                        w.start, instance_id=seg.instance_id, segment_id=seg.id, period_end=w.end,
                        usage_us=w.end - w.start))
                    report.charged += amount
                end = found[-1].end if found else to_us(seg.settled_until)
                seg_updates.append({"sid": seg.id, "until": from_us(end), "is_done": closed and end >= to_us(seg.ended_at)})
            ledger.apply(db, postings, ledger.accounts_for(postings))
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
            postings.extend(ledger.charge_rows(f"{d.key}:{w.key}", PostingKind.STORAGE, amount, d.owner_id,
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
        vouchers = ledger.live_vouchers(db, payers) if (settings.billing_enabled and has_disk_price) else {}
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
        ledger.apply(db, postings, ledger.accounts_for(postings))
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
                        .where(Image.kind == ImageKind.SAVED, Image.status == "ready", Image.owner_id.is_not(None),
                               Image.size_bytes.is_not(None))).all()
    postings = []
    if steps and settings.billing_enabled:
        vouchers = ledger.live_vouchers(db, {i.owner_id for i in images})
        for p_start in range(start, last_end, period):
            for image in images:
                origin = max(to_us(image.created_at), p_start)
                if origin >= p_start + period:
                    continue
                gb_milli = (image.size_bytes * 1000) // 2**30  # thousandths of a GB
                amount = core.cum_floor(steps, gb_milli, US_PER_DAY * 1000, origin, p_start + period)
                if amount:
                    postings.extend(ledger.charge_rows(f"image-storage:{image.id}:{p_start // US}", PostingKind.STORAGE, amount,
                                                 image.owner_id, vouchers.get(image.owner_id, []), origin,
                                                 period_end=p_start + period, memo=f"saved image {image.id}"))
                    report.charged += amount
    ledger.apply(db, postings, ledger.accounts_for(postings))
    report.postings += len(postings)
    meta.value = str(last_end)


def expire_vouchers(platform, horizon: int, report: SettleReport) -> None:
    with platform.sessions.begin() as db:
        due = db.scalars(select(Voucher).where(Voucher.expired.is_(False), Voucher.expires_at <= from_us(horizon))).all()
        if not due:
            return
        balances = dict(db.execute(select(Account.name, Account.balance).where(
            Account.name.in_([ledger.voucher_account(v.user_id, v.id) for v in due]))).all())
        postings = []
        for v in due:
            account = ledger.voucher_account(v.user_id, v.id)
            postings.append(ledger.posting_row(f"voucher-expiry:{v.id}", PostingKind.EXPIRY, account, ledger.VOUCHERS,
                                               max(0, balances.get(account, 0)), v.user_id, memo="voucher expired"))
            v.expired = True
        ledger.apply(db, postings, ledger.accounts_for(postings))
        report.postings += len(postings)
