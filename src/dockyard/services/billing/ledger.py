"""The double-entry ledger: accounts (a wallet and one per voucher for each user, and the
platform's own), postings and the balances they move, recharges and vouchers, and whether
a balance can pay for a start."""

from __future__ import annotations

import secrets
from collections import defaultdict
from datetime import datetime

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from dockyard.config import Settings
from dockyard.core import billing as core
from dockyard.core.billing import PaymentRequired
from dockyard.core.errors import Conflict, InvalidInput, NotFound
from dockyard.core.kinds import PostingKind
from dockyard.core.sharing import format_milli
from dockyard.db.billing_models import Account, Posting, Voucher
from dockyard.db.models import User, utcnow
from dockyard.services import audit
from dockyard.services.billing.prices import from_us, hourly_price, price_rows, to_us

REVENUE, RECHARGES, VOUCHERS = "platform:revenue", "platform:recharges", "platform:vouchers"


def wallet(user_id: int) -> str:
    return f"user:{user_id}:wallet"


def voucher_account(user_id: int, voucher_id: int) -> str:
    return f"user:{user_id}:voucher:{voucher_id}"


def money(settings: Settings, minor: int) -> str:
    return f"{core.format_amount(minor)} {settings.currency}"


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


def apply(db: Session, rows: list[dict], accounts: dict[str, tuple[str, int | None]]) -> None:
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


def system_accounts() -> dict[str, tuple[str, int | None]]:
    return {REVENUE: ("revenue", None), RECHARGES: ("recharges", None), VOUCHERS: ("vouchers", None)}


def accounts_for(rows: list[dict]) -> dict[str, tuple[str, int | None]]:
    accounts = system_accounts()
    for row in rows:
        for name in (row["debit"], row["credit"]):
            if name.startswith("user:"):
                accounts[name] = ("voucher" if ":voucher:" in name else "wallet", row["user_id"])
    return accounts


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
    accounts = {**system_accounts(), wallet(user.id): ("wallet", user.id)}
    apply(db, [posting_row(key, PostingKind.RECHARGE, RECHARGES, wallet(user.id), minor, user.id, memo=f"recharge by {by}")], accounts)
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
    apply(db, [posting_row(f"voucher:{voucher.id}", PostingKind.VOUCHER, VOUCHERS, account, minor, user.id,
                     memo=f"voucher until {expires_at.isoformat()} by {by}")],
           {**system_accounts(), account: ("voucher", user.id)})
    audit.record(db, by, "wallet.voucher", user.name, f"{core.format_amount(minor)} until {expires_at.isoformat()}")
    return voucher


def posting_row(key: str, kind: PostingKind, debit: str, credit: str, amount: int, user_id: int | None, *, instance_id=None,
         segment_id=None, period_start=None, period_end=None, usage_us=None, memo=None) -> dict:
    return {"key": key, "kind": kind, "debit": debit, "credit": credit, "amount": amount, "user_id": user_id,
            "instance_id": instance_id, "segment_id": segment_id,
            "period_start": from_us(period_start) if period_start is not None else None,
            "period_end": from_us(period_end) if period_end is not None else None,
            "usage_us": usage_us, "memo": memo, "created_at": utcnow()}


def live_vouchers(db: Session, user_ids: set[int]) -> dict[int, list[list]]:
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


def charge_rows(key: str, kind: PostingKind, amount: int, user_id: int, vouchers: list[list], period_start: int,
                 **extra) -> list[dict]:
    """Postings for one charge: vouchers valid at the period's start first, then the wallet
    (the wallet leg always exists and carries the usage). Voucher balances move in place."""
    usable = [(v[0], v[1]) for v in vouchers if v[2] > period_start and v[1] > 0]
    legs = core.split_charge(amount, usable, wallet(user_id))
    rows = []
    for account, part in legs:
        if account == wallet(user_id):
            rows.append(posting_row(key, kind, account, REVENUE, part, user_id, period_start=period_start, **extra))
        else:
            for v in vouchers:
                if v[0] == account:
                    v[1] -= part
            leg_extra = {**extra, "usage_us": None}
            rows.append(posting_row(f"{key}:v{account.rsplit(':', 1)[1]}", kind, account, REVENUE, part, user_id,
                             period_start=period_start, **leg_extra))
    return rows
