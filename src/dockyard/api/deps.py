"""Request dependencies: the platform, a database session, the calling user (its address:
core/addresses.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Iterator

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import update
from sqlalchemy.orm import Session

from dockyard.core import scopes
from dockyard.core.errors import Forbidden, Unauthorized
from dockyard.db.models import ApiToken, User, utcnow
from dockyard.services import users
from dockyard.background.driver import Driver
from dockyard.services.platform import Platform

_bearer = HTTPBearer(auto_error=False)
API_PREFIX = "/api/v1"
# A token's last use is written at most this often: a token check stays a read.
LAST_USED_EVERY = timedelta(minutes=1)


# async: FastAPI runs a plain def dependency on a worker thread, a hop per request for
# what is only an attribute read.
async def get_platform(request: Request) -> Platform:
    return request.app.state.platform


async def get_driver(request: Request) -> Driver:
    return request.app.state.driver


def get_db(request: Request, platform: Platform = Depends(get_platform)) -> Iterator[Session]:
    """A write transaction, or for GET a read one (no write lock on SQLite)."""
    factory = platform.reads if request.method in scopes.READ_METHODS else platform.sessions
    with factory.begin() as db:
        yield db


def current_user(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    platform: Platform = Depends(get_platform),
) -> User:
    """The token's user, if the token's scope allows this route (403 if not)."""
    if credentials is None:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>'")
    with platform.reads.begin() as db:
        token, user = users.token_and_user(db, credentials.credentials)
        db.expunge(user)
        db.expunge(token)
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path).removeprefix(API_PREFIX)
    if not scopes.allows(token.scope, request.method, getattr(route, "tags", []), path):
        raise Forbidden(f"this token's scope ({token.scope}) does not allow {request.method} {path}")
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_EVERY:
        with platform.sessions.begin() as db:
            db.execute(update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now))
    request.state.token_id = token.id
    return user


def admin_user(user: User = Depends(current_user)) -> User:
    if not user.is_admin:
        raise Forbidden("this needs an admin")
    return user
