"""Browser sessions (an HttpOnly cookie), and one-time login links that start one."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dockyard.core.errors import Unauthorized
from dockyard.db.models import BrowserSession, User, utcnow

COOKIE = "dockyard_session"
SESSION_LIFETIME = timedelta(days=7)
LINK_LIFETIME = timedelta(minutes=2)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(db: Session, user: User, lifetime: timedelta = SESSION_LIFETIME) -> str:
    token = secrets.token_urlsafe(32)
    db.add(BrowserSession(user_id=user.id, token_hash=_digest(token), expires_at=utcnow() + lifetime))
    return token


def user_for(db: Session, token: str) -> User:
    row = db.scalars(select(BrowserSession).where(BrowserSession.token_hash == _digest(token))).first()
    if row is None or row.expires_at <= utcnow():
        raise Unauthorized("not signed in, or the session expired")
    return db.get(User, row.user_id)


def redeem_link(db: Session, token: str) -> str:
    """Trade a one-time login link for a browser session; the link is spent."""
    user = user_for(db, token)
    db.execute(delete(BrowserSession).where(BrowserSession.token_hash == _digest(token)))
    return start(db, user)


def end(db: Session, token: str) -> None:
    db.execute(delete(BrowserSession).where(BrowserSession.token_hash == _digest(token)))
