"""A user's notifications (the console's notifications page, `dockyard notifications`):
low balance, instances stopped for an empty wallet or by their auto-stop policy.
Each user sees and marks only their own."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dockyard.core.errors import NotFound
from dockyard.core.kinds import NoticeKind
from dockyard.db.billing_models import Notice
from dockyard.db.models import User, utcnow

LISTED = 200


def post(db: Session, user_id: int, kind: NoticeKind, message: str) -> None:
    db.add(Notice(user_id=user_id, kind=kind, message=message))


def listed(db: Session, user: User, unread_only: bool = False, limit: int = LISTED) -> list[Notice]:
    """Newest first."""
    query = select(Notice).where(Notice.user_id == user.id)
    if unread_only:
        query = query.where(Notice.read_at.is_(None))
    return list(db.scalars(query.order_by(Notice.id.desc()).limit(limit)))


def unread_count(db: Session, user_id: int) -> int:
    return db.scalar(select(func.count(Notice.id)).where(Notice.user_id == user_id, Notice.read_at.is_(None)))


def mark_read(db: Session, user: User, ids: list[int] | None = None) -> int:
    """Mark the given notifications (all, when None) read; how many were unread. An id
    that is not the user's answers 404 and marks nothing."""
    query = update(Notice).where(Notice.user_id == user.id, Notice.read_at.is_(None))
    if ids is not None:
        wanted = set(ids)
        mine = set(db.scalars(select(Notice.id).where(Notice.user_id == user.id, Notice.id.in_(wanted))))
        if wanted - mine:
            missing = ", ".join(str(i) for i in sorted(wanted - mine))
            raise NotFound(f"ids: notification {missing} not found", field="ids")
        query = query.where(Notice.id.in_(wanted))
    return db.execute(query.values(read_at=utcnow())).rowcount
