"""Billing: balances, statements, the price book, recharges, vouchers, the ledger."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.api.deps import admin_user, current_user, get_db, get_driver, get_platform
from dockyard.core.billing import format_amount
from dockyard.core.errors import NotFound
from dockyard.db.models import User
from dockyard.services.billing import ledger, settlement, statements, verification
from dockyard.services.billing import prices as price_book  # `prices` is a route here
from dockyard.background.driver import Driver
from dockyard.services.platform import Platform

router = APIRouter(prefix="/billing", tags=["billing"])
Amount = str | int | float  # parsed exactly by core.billing.parse_amount (400 naming the field)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PriceIn(Strict):
    kind: str = Field(description="gpu, no_gpu, disk or image")
    price: Amount = Field(description="per GPU per hour (gpu), per hour (no_gpu), per GB per day (disk, image)")
    model: str | None = Field(default=None, max_length=64)
    node: str | None = Field(default=None, max_length=64)
    effective_from: datetime | None = None


class CreditIn(Strict):
    user: str = Field(max_length=64)
    amount: Amount
    request_id: str | None = Field(default=None, max_length=100, description="makes a retry harmless")


class VoucherIn(Strict):
    user: str = Field(max_length=64)
    amount: Amount
    expires_at: datetime


class PostingOut(BaseModel):
    key: str
    kind: str
    debit: str
    credit: str
    amount: str
    amount_minor: int
    user_id: int | None
    instance_id: str | None
    segment_id: int | None
    period_start: datetime | None
    period_end: datetime | None
    usage_us: int | None
    memo: str | None
    created_at: datetime


def _posting(p) -> PostingOut:
    return PostingOut(key=p.key, kind=p.kind, debit=p.debit, credit=p.credit, amount=format_amount(p.amount, 4),
                      amount_minor=p.amount, user_id=p.user_id, instance_id=p.instance_id, segment_id=p.segment_id,
                      period_start=p.period_start, period_end=p.period_end, usage_us=p.usage_us, memo=p.memo,
                      created_at=p.created_at)


def _subject(db: Session, caller: User, name: str | None) -> User:
    """Yourself, or (admins only) any user."""
    if name is None or name == caller.name:
        return caller
    if not caller.is_admin:
        raise NotFound(f"user: unknown user {name!r}", field="user")
    found = db.scalars(select(User).where(User.name == name)).one_or_none()
    if found is None:
        raise NotFound(f"user: unknown user {name!r}", field="user")
    return found


@router.get("/balance")
def balance(user_name: str | None = Query(None, alias="user"), caller: User = Depends(current_user),
            db: Session = Depends(get_db), platform: Platform = Depends(get_platform)) -> dict:
    return statements.balance_view(db, platform.settings, _subject(db, caller, user_name))


@router.get("/statement", response_model=None)
def statement(month: str | None = Query(None, description="YYYY-MM, default this month"),
              user_name: str | None = Query(None, alias="user"), format: str = Query("json", pattern="^(json|csv)$"),
              caller: User = Depends(current_user), db: Session = Depends(get_db),
              platform: Platform = Depends(get_platform)):
    data = statements.statement(db, platform.settings, _subject(db, caller, user_name), month)
    if format == "json":
        return data
    return PlainTextResponse(statements.statement_csv(data), media_type="text/csv")


@router.get("/prices")
def prices(_: User = Depends(current_user), db: Session = Depends(get_db),
           platform: Platform = Depends(get_platform)) -> list[dict]:
    return price_book.list_prices(db, platform.settings)


@router.post("/prices", status_code=201)
def set_price(body: PriceIn, admin: User = Depends(admin_user), platform: Platform = Depends(get_platform)) -> dict:
    with platform.sessions.begin() as db:
        entry = price_book.set_price(db, body.kind, body.price, body.model or "", body.node or "", body.effective_from,
                                  by=admin.name)
        return {"kind": entry.kind, "model": entry.model or None, "node": entry.node or None,
                "price": format_amount(entry.price, 4), "price_minor": entry.price,
                "currency": platform.settings.currency, "effective_from": entry.effective_from}


@router.post("/credit", response_model=PostingOut, status_code=201)
def credit(body: CreditIn, admin: User = Depends(admin_user), platform: Platform = Depends(get_platform)) -> PostingOut:
    with platform.sessions.begin() as db:
        return _posting(ledger.recharge(db, body.user, body.amount, by=admin.name, request_id=body.request_id))


@router.post("/vouchers", status_code=201)
def voucher(body: VoucherIn, admin: User = Depends(admin_user), platform: Platform = Depends(get_platform)) -> dict:
    with platform.sessions.begin() as db:
        v = ledger.grant_voucher(db, body.user, body.amount, body.expires_at, by=admin.name)
        return {"id": v.id, "user": body.user, "amount": format_amount(v.amount), "expires_at": v.expires_at}


@router.get("/postings", response_model=list[PostingOut])
def postings(instance: str | None = None, kind: str | None = None, user_name: str | None = Query(None, alias="user"),
             limit: int = Query(10_000, ge=1, le=100_000), caller: User = Depends(current_user),
             db: Session = Depends(get_db)) -> list[PostingOut]:
    """Your postings (admins: everyone's, or one user's)."""
    subject = None if (caller.is_admin and user_name is None) else _subject(db, caller, user_name)
    return [_posting(p) for p in statements.postings(db, subject, instance, kind, limit)]


@router.post("/settle")
def settle(_: User = Depends(admin_user), platform: Platform = Depends(get_platform),
           driver: Driver = Depends(get_driver)) -> dict:
    """Run a settlement cycle now (the metering loop runs one at least every minute)."""
    report = settlement.settle(platform, driver=driver)
    return {"opened": report.opened, "closed": report.closed, "postings": report.postings,
            "charged": format_amount(report.charged, 4), "stopped": report.stopped}


@router.get("/ledger/verify")
def verify(_: User = Depends(admin_user), platform: Platform = Depends(get_platform)) -> dict:
    return verification.verify_now(platform)
