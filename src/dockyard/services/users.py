"""Users, passwords (argon2) and API tokens (stored as SHA-256 digests)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dockyard.core import scopes
from dockyard.core.errors import Conflict, InvalidInput, NotFound, Unauthorized
from dockyard.core.validation import is_valid_name
from dockyard.db.models import ApiToken, BrowserSession, User, utcnow
from dockyard.db.session import insert_unique

_hasher = PasswordHasher()
TOKEN_PREFIX = "dy_"
MIN_PASSWORD_LENGTH = 8


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(db: Session, name: str, password: str, is_admin: bool = False) -> User:
    if not is_valid_name(name):
        raise InvalidInput(f"user name {name!r}: use letters, digits, '-' and '_' (at most 63)", field="name")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password: at least {MIN_PASSWORD_LENGTH} characters", field="password")
    user = User(name=name, password_hash=_hasher.hash(password), is_admin=is_admin)
    return insert_unique(db, user, Conflict(f"user {name!r} already exists", field="name"))


_dummy_hash: str | None = None


def _dummy() -> str:
    """A hash no password matches, verified for unknown names: the same work as a real one."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
    return _dummy_hash


def check_password(db: Session, name: str, password: str) -> User:
    """The user with this name and password, or 401. Callers go through
    services/login_guard.py, which limits failures."""
    user = db.scalars(select(User).where(User.name == name)).one_or_none()
    try:
        _hasher.verify(user.password_hash if user else _dummy(), password)
        if user is None:
            raise VerifyMismatchError
    except (VerifyMismatchError, InvalidHashError):
        raise Unauthorized("wrong user name or password") from None
    return user


def issue_token(db: Session, user: User, lifetime: timedelta, scope: str = scopes.ALL,
                name: str | None = None) -> str:
    """A new API token for `user` (returned once, stored hashed)."""
    if scope not in scopes.SCOPES:
        raise InvalidInput(f"scope: {scope!r} is not one of {', '.join(scopes.SCOPES)}", field="scope")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    db.add(ApiToken(user_id=user.id, token_hash=_digest(token), scope=scope, name=name,
                    expires_at=utcnow() + lifetime))
    db.flush()
    return token


def token_for(db: Session, token: str) -> ApiToken:
    """The live token row for a bearer token, or 401 (unknown, revoked or expired)."""
    return token_and_user(db, token)[0]


def token_and_user(db: Session, token: str) -> tuple[ApiToken, User]:
    """`token_for` and its user, in one query (every API request asks)."""
    row = db.execute(select(ApiToken, User).join(User, User.id == ApiToken.user_id)
                     .where(ApiToken.token_hash == _digest(token))).one_or_none()
    if row is None or (row[0].expires_at is not None and row[0].expires_at <= utcnow()):
        raise Unauthorized("invalid, expired or revoked token")
    return row[0], row[1]


def user_for_token(db: Session, token: str) -> User:
    return token_and_user(db, token)[1]


def list_tokens(db: Session, user: User) -> list[ApiToken]:
    return list(db.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)))


def revoke_token(db: Session, user: User, token_id: int) -> None:
    """Revoke one of `user`'s tokens; anyone else's is 404."""
    done = db.execute(delete(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == user.id)).rowcount
    if not done:
        raise NotFound(f"token {token_id} not found")


def hash_new_password(new: str) -> str:
    """Check a new password's length and hash it (slow: outside any write transaction)."""
    if len(new) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"new_password: at least {MIN_PASSWORD_LENGTH} characters", field="new_password")
    return _hasher.hash(new)


def set_password_hash(db: Session, user: User, password_hash: str) -> None:
    """Replace the user's password (the caller checked the current one); every token and
    browser session of the user ends."""
    db.get(User, user.id).password_hash = password_hash
    db.execute(delete(ApiToken).where(ApiToken.user_id == user.id))
    db.execute(delete(BrowserSession).where(BrowserSession.user_id == user.id))
