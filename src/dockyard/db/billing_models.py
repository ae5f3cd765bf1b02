"""Billing tables: price book, usage segments, accounts, the ledger, vouchers.

The ledger (`billing_postings`) is append-only: every row moves `amount` minor units from
its `debit` account to its `credit` account, under a unique `key` derived from what it
pays for. Account balances are a cache of the postings, checked by `verify`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dockyard.core.kinds import AccountKind, NoticeKind, PostingKind, PriceKind
from dockyard.db.base import Base, enum_column, utcnow


class PriceEntry(Base):
    __tablename__ = "billing_prices"
    __table_args__ = (Index("ix_billing_prices_lookup", "kind", "model", "node", "effective_from"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[PriceKind] = mapped_column(enum_column(PriceKind))
    model: Mapped[str] = mapped_column(String(64), default="")
    node: Mapped[str] = mapped_column(String(64), default="")
    price: Mapped[int] = mapped_column(BigInteger)  # minor units per hour, or per GB per day
    effective_from: Mapped[datetime] = mapped_column()
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsageSegment(Base):
    """One run of an instance, from its 'running' event to the event that stopped its
    container. Derived from instance_events once, never changed afterwards (but for the
    settlement cursor)."""

    __tablename__ = "billing_segments"
    __table_args__ = (Index("ix_billing_segments_pending", "done"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"), index=True)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    start_event_id: Mapped[int] = mapped_column(Integer, unique=True)
    end_event_id: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    node: Mapped[str] = mapped_column(String(64))
    gpu_model: Mapped[str] = mapped_column(String(64))
    gpu_count: Mapped[int] = mapped_column(Integer)
    gpu_milli: Mapped[int] = mapped_column(Integer)  # GPU thousandths billed: 1000 a whole GPU
    no_gpu: Mapped[bool] = mapped_column(Boolean)
    settled_until: Mapped[datetime] = mapped_column()
    done: Mapped[bool] = mapped_column(Boolean, default=False)


class Account(Base):
    __tablename__ = "billing_accounts"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[AccountKind] = mapped_column(enum_column(AccountKind))
    user_id: Mapped[int | None] = mapped_column(Integer, index=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)  # credits minus debits
    low_warned: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Posting(Base):
    __tablename__ = "billing_postings"
    __table_args__ = (Index("ix_billing_postings_user_period", "user_id", "period_start"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[PostingKind] = mapped_column(enum_column(PostingKind))
    debit: Mapped[str] = mapped_column(String(64), index=True)
    credit: Mapped[str] = mapped_column(String(64), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int | None] = mapped_column(Integer)
    instance_id: Mapped[str | None] = mapped_column(String(32), index=True)
    segment_id: Mapped[int | None] = mapped_column(Integer, index=True)
    period_start: Mapped[datetime | None] = mapped_column()
    period_end: Mapped[datetime | None] = mapped_column()
    usage_us: Mapped[int | None] = mapped_column(BigInteger)
    memo: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Voucher(Base):
    __tablename__ = "billing_vouchers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column()
    expired: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StorageCursor(Base):
    """Up to when an instance's disks have been charged."""

    __tablename__ = "billing_storage"
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"), primary_key=True)
    settled_until: Mapped[datetime] = mapped_column()
    done: Mapped[bool] = mapped_column(Boolean, default=False)


class VolumeStorageCursor(Base):
    """Up to when a volume has been charged."""

    __tablename__ = "billing_volume_storage"
    volume_id: Mapped[str] = mapped_column(ForeignKey("volumes.id"), primary_key=True)
    settled_until: Mapped[datetime] = mapped_column()
    done: Mapped[bool] = mapped_column(Boolean, default=False)


class Notice(Base):
    """Messages to a user (the console's notifications): low balance, instances stopped
    for an empty wallet or by their auto-stop policy, saves finished or failed."""

    __tablename__ = "billing_notices"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[NoticeKind] = mapped_column(enum_column(NoticeKind))
    message: Mapped[str] = mapped_column(Text)
    read_at: Mapped[datetime | None] = mapped_column()
