"""Browser sessions (an HttpOnly cookie), and the sessions of an instance's own host with
the one-time tickets that open them."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dockyard.core.errors import Unauthorized
from dockyard.db.models import BrowserSession, User, utcnow

COOKIE = "dockyard_session"
INSTANCE_COOKIE = "dockyard_instance"  # on an instance's host only
SESSION_LIFETIME = timedelta(days=7)
INSTANCE_SESSION_LIFETIME = timedelta(days=1)
TICKET_LIFETIME = timedelta(minutes=2)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(db: Session, user: User, lifetime: timedelta = SESSION_LIFETIME) -> str:
    token = secrets.token_urlsafe(32)
    db.add(BrowserSession(user_id=user.id, token_hash=_digest(token), expires_at=utcnow() + lifetime))
    return token


def _row(db: Session, token: str) -> BrowserSession | None:
    row = db.scalars(select(BrowserSession).where(BrowserSession.token_hash == _digest(token))).first()
    return row if row is not None and row.expires_at > utcnow() else None


def user_for(db: Session, token: str) -> User:
    """The user of a console session (an instance's session or ticket is none)."""
    row = _row(db, token)
    if row is None or row.instance_id is not None:
        raise Unauthorized("not signed in, or the session expired")
    return db.get(User, row.user_id)


def mint_ticket(db: Session, user: User, instance_id: str, console_token: str | None = None) -> str:
    """A one-time ticket (valid TICKET_LIFETIME) that opens `instance_id`'s host for `user`;
    the session it opens ends with the console session it came from, if any."""
    parent = _row(db, console_token) if console_token else None
    # The user's spent-out instance sessions and tickets go, so that they do not pile up.
    db.execute(delete(BrowserSession).where(BrowserSession.user_id == user.id, BrowserSession.instance_id.is_not(None),
                                            BrowserSession.expires_at <= utcnow()))
    token = secrets.token_urlsafe(32)
    db.add(BrowserSession(user_id=user.id, token_hash=_digest(token), expires_at=utcnow() + TICKET_LIFETIME,
                          instance_id=instance_id, ticket=True, parent_id=parent.id if parent else None))
    return token


def redeem_ticket(db: Session, token: str, instance_id: str) -> str:
    """Trade a ticket for a session of that instance's host; the ticket is spent."""
    row = _row(db, token)
    if row is None or not row.ticket or row.instance_id != instance_id:
        raise Unauthorized("this link was used already, has expired, or is for another instance")
    db.delete(row)
    session = secrets.token_urlsafe(32)
    db.add(BrowserSession(user_id=row.user_id, token_hash=_digest(session), instance_id=instance_id,
                          expires_at=utcnow() + INSTANCE_SESSION_LIFETIME, parent_id=row.parent_id))
    return session


def user_for_instance(db: Session, token: str, instance_id: str) -> User:
    """The user of a session of `instance_id`'s host."""
    row = _row(db, token)
    if row is None or row.ticket or row.instance_id != instance_id:
        raise Unauthorized("not signed in to this instance: open it from the console or `dockyard jupyter`")
    return db.get(User, row.user_id)


def end(db: Session, token: str) -> None:
    db.execute(delete(BrowserSession).where(BrowserSession.token_hash == _digest(token)))
