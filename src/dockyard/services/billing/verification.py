"""The ledger's invariants, checked on one snapshot of the books."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dockyard.config import Settings
from dockyard.core import billing as core
from dockyard.core.kinds import PostingKind
from dockyard.db.billing_models import Account, Posting, UsageSegment
from dockyard.services.billing.prices import GPU_UNIT_US, from_us, price_rows, segment_steps, to_us


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
            .where(P.kind == PostingKind.USAGE, P.segment_id.is_not(None))):
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
            steps, multiplier = segment_steps(rows, seg)
            expected = core.cum_floor(steps, multiplier, GPU_UNIT_US, origin, until)
            if charged.get(seg.id, 0) != expected:
                problems.append(f"segment {seg.id}: charged {charged.get(seg.id, 0)}, its price integral is {expected}")
    storage: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for iid, start, end in db.execute(select(P.instance_id, P.period_start, P.period_end)
                                      .where(P.kind == PostingKind.STORAGE, P.instance_id.is_not(None), P.usage_us.is_not(None))):
        storage[iid].append((to_us(start), to_us(end)))
    for iid, periods in storage.items():
        periods.sort()
        for (s1, e1), (s2, e2) in zip(periods, periods[1:]):
            if s2 < e1:
                problems.append(f"instance {iid}: storage periods overlap at {from_us(s2).isoformat()}")
    return {"ok": not problems, "problems": problems, "accounts": len(stored),
            "postings": db.scalar(select(func.count()).select_from(P)), "segments": len(segments),
            "total_moved": core.format_amount(int(debits or 0)), "currency": settings.currency}
