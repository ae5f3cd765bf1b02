"""Request dependencies: the platform, a database session, the calling user, its address."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from functools import lru_cache
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


def get_platform(request: Request) -> Platform:
    return request.app.state.platform


def get_driver(request: Request) -> Driver:
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
        token = users.token_for(db, credentials.credentials)
        user = db.get(User, token.user_id)
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


def client_address(request: Request) -> str:
    """The address of whoever sent the request. X-Forwarded-For (whose last entry is always
    the peer the server saw: the front door appends it) is followed leftwards only through
    the proxies that `trusted_proxies` names; a client cannot claim an address of its own."""
    trusted = _trusted(tuple(request.app.state.platform.settings.trusted_proxies))
    claimed = request.headers.get("x-forwarded-for")
    hops = [h.strip() for h in claimed.split(",") if h.strip()] if claimed else []
    if not hops:
        return request.client.host if request.client else ""
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop
    return hops[0]


@lru_cache(maxsize=4)  # one configuration per server
def _trusted(configured: tuple[str, ...]) -> list:
    return [ipaddress.ip_network(p, strict=False) for p in configured]


def _is_trusted(hop: str, trusted: list) -> bool:
    try:
        address = ipaddress.ip_address(hop)
    except ValueError:
        return False
    return any(address in network for network in trusted)
