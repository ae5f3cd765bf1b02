"""Notifications: your own, newest first; mark them read."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from dockyard.api.deps import current_user, get_db
from dockyard.api.schemas import Strict
from dockyard.db.models import User
from dockyard.services import notifications

router = APIRouter(prefix="/notifications", tags=["notifications"])


class NotificationOut(BaseModel):
    id: int
    at: datetime
    kind: str
    message: str
    read: bool
    read_at: datetime | None


class MarkRead(Strict):
    ids: list[int] | None = Field(default=None, max_length=1000, description="these; all when left out")


class Marked(BaseModel):
    marked: int
    unread: int


def notification_out(notice) -> NotificationOut:
    return NotificationOut(id=notice.id, at=notice.at, kind=notice.kind, message=notice.message,
                           read=notice.read_at is not None, read_at=notice.read_at)


@router.get("", response_model=list[NotificationOut])
def list_all(unread: bool = Query(False, description="only unread ones"),
             limit: int = Query(notifications.LISTED, ge=1, le=notifications.LISTED),
             user: User = Depends(current_user), db: Session = Depends(get_db)) -> list[NotificationOut]:
    return [notification_out(n) for n in notifications.listed(db, user, unread_only=unread, limit=limit)]


@router.post("/read", response_model=Marked)
def mark_read(body: MarkRead | None = None, user: User = Depends(current_user),
              db: Session = Depends(get_db)) -> Marked:
    marked = notifications.mark_read(db, user, body.ids if body else None)
    return Marked(marked=marked, unread=notifications.unread_count(db, user.id))
