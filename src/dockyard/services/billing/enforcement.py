"""Enforcement: a notice when a balance runs low, and a stop (never a release) of the
instances that pay when it reaches the credit limit."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select, update

from dockyard.config import Settings
from dockyard.core import billing as core
from dockyard.core.billing import PriceRow
from dockyard.core.kinds import NoticeKind
from dockyard.core.states import Status
from dockyard.db.billing_models import Account, Notice, UsageSegment
from dockyard.db.models import Instance, utcnow
from dockyard.services.billing import ledger
from dockyard.services.billing.prices import GPU_UNIT_US, hourly_price, segment_steps, to_us
from dockyard.services.lifecycle import transition


def enforce(platform, rows: list[PriceRow], horizon: int, driver=None) -> tuple[list[int], list[str]]:
    """Warn below the threshold (or one hour of current spend); stop the user's paying
    running instances at zero or the credit limit. Stopping never releases.
    Returns the users warned and the instances stopped."""
    settings: Settings = platform.settings
    warned: list[int] = []
    stopped: list[str] = []
    if not settings.billing_enabled:
        return warned, stopped
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
                    steps_cache[mode] = segment_steps(rows, seg)
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
                db.execute(update(Account).where(Account.name == ledger.wallet(uid)).values(low_warned=False))
                continue
            if not rate.get(uid):
                continue
            if balance <= floor:
                why = (f"balance {ledger.money(settings, balance)} reached the credit limit; "
                       f"instances stopped (not released) until a recharge")
                db.add(Notice(user_id=uid, kind=NoticeKind.STOPPED, message=why))
                to_stop.extend((iid, why) for iid in paying[uid])
            elif balance < limit and uid not in warned_users:
                db.add(Notice(user_id=uid, kind=NoticeKind.LOW_BALANCE, message=(
                    f"low balance: {ledger.money(settings, balance)} left, "
                    f"spending {ledger.money(settings, rate[uid])}/hour")))
                wallet_row = db.get(Account, ledger.wallet(uid))
                if wallet_row is None:
                    db.add(Account(name=ledger.wallet(uid), kind="wallet", user_id=uid, balance=0, low_warned=True))
                else:
                    wallet_row.low_warned = True
                warned.append(uid)
    for instance_id, why in to_stop:
        if transition(platform, instance_id, Status.RUNNING, Status.STOPPING, f"stop: {why}"):
            stopped.append(instance_id)
            if driver is not None:
                driver.kick(instance_id)
    return warned, stopped
