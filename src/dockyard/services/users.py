"""Users, passwords (argon2) and API tokens (stored as SHA-256 digests)."""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard.core.errors import Conflict, InvalidInput, Unauthorized
from dockyard.core.validation import is_valid_name
from dockyard.db.models import ApiToken, User

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
    db.add(user)
    try:
        db.flush()
    except IntegrityError:
        raise Conflict(f"user {name!r} already exists", field="name") from None
    return user


def check_password(db: Session, name: str, password: str) -> User:
    """The user with this name and password (the web console signs in with it), or 401."""
    user = db.scalars(select(User).where(User.name == name)).one_or_none()
    try:
        if user is None:
            raise VerifyMismatchError
        _hasher.verify(user.password_hash, password)
    except (VerifyMismatchError, InvalidHashError):
        raise Unauthorized("wrong user name or password") from None
    return user


def login(db: Session, name: str, password: str) -> str:
    """Check a password and issue a new API token (returned once, stored hashed)."""
    user = check_password(db, name, password)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    db.add(ApiToken(user_id=user.id, token_hash=_digest(token)))
    return token


def user_for_token(db: Session, token: str) -> User:
    user = db.scalars(
        select(User).join(ApiToken, ApiToken.user_id == User.id).where(ApiToken.token_hash == _digest(token))
    ).one_or_none()
    if user is None:
        raise Unauthorized("invalid or revoked token")
    return user
