"""What users and admins read: an instance's costs, a user's balance, a month's
statement, and the postings."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dockyard.config import Settings
from dockyard.core import billing as core
from dockyard.core.billing import US
from dockyard.core.errors import InvalidInput
from dockyard.core.kinds import COST_KINDS, PostingKind
from dockyard.db.billing_models import Account, Notice, Posting, Voucher
from dockyard.db.models import Instance, User, utcnow
from dockyard.services.billing import ledger
from dockyard.services.billing.prices import hourly_price, price_rows, to_us


def instance_costs(db: Session, settings: Settings, instance: Instance) -> tuple[str, str]:
    """An instance's price per hour in its current mode, and what it has been charged."""
    price = hourly_price(price_rows(db), instance.gpu_model, instance.gpu_milli, instance.node_name, instance.no_gpu,
                         to_us(utcnow()))
    cost = db.scalar(select(func.coalesce(func.sum(Posting.amount), 0))
                     .where(Posting.instance_id == instance.id, Posting.kind.in_(COST_KINDS)))
    return core.format_amount(price), core.format_amount(int(cost or 0))


def balance_view(db: Session, settings: Settings, user: User) -> dict:
    rows = price_rows(db)
    now = to_us(utcnow())
    accounts = {a.name: a for a in db.scalars(select(Account).where(Account.user_id == user.id))}
    vouchers = []
    for v in db.scalars(select(Voucher).where(Voucher.user_id == user.id).order_by(Voucher.expires_at)):
        acct = accounts.get(ledger.voucher_account(user.id, v.id))
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
        "wallet": core.format_amount(accounts[ledger.wallet(user.id)].balance
                                     if ledger.wallet(user.id) in accounts else 0),
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
             .where(Posting.user_id == user.id, Posting.kind.in_(COST_KINDS),
                    Posting.period_start >= start, Posting.period_start < end))
    for period_start, instance_id, kind, amount, usage_us, memo in db.execute(query):
        what = instance_id or (memo or "storage")
        line = lines[(period_start.date().isoformat(), what, kind)]
        line[0] += amount
        line[1] += (usage_us or 0) if kind == PostingKind.USAGE else 0
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
        if kind not in set(PostingKind):
            raise InvalidInput(f"kind: {kind!r} is not a posting kind; use one of {', '.join(PostingKind)}",
                               field="kind")
        query = query.where(Posting.kind == kind)
    return list(db.scalars(query))


def statement_csv(data: dict) -> str:
    """A statement (as `statement` gives it) as CSV: a row per day, instance and kind, then the total."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["day", "instance_id", "instance", "kind", "seconds", f"amount_{data['currency']}"])
    for r in data["rows"]:
        writer.writerow([r["day"], r["instance_id"] or "", r["instance"], r["kind"], r["seconds"], r["amount"]])
    writer.writerow(["total", "", "", "", "", data["total"]])
    return out.getvalue()
