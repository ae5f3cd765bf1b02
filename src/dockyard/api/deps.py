"""Request dependencies: the platform, a database session, the calling user."""

from __future__ import annotations

from typing import Iterator

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from dockyard.core.errors import Forbidden, Unauthorized
from dockyard.db.models import User
from dockyard.services import users
from dockyard.services.driver import Driver
from dockyard.services.platform import Platform

_bearer = HTTPBearer(auto_error=False)


def get_platform(request: Request) -> Platform:
    return request.app.state.platform


def get_driver(request: Request) -> Driver:
    return request.app.state.driver


def get_db(platform: Platform = Depends(get_platform)) -> Iterator[Session]:
    with platform.sessions.begin() as db:
        yield db


def current_user(
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    platform: Platform = Depends(get_platform),
) -> User:
    if credentials is None:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>'")
    with platform.sessions.begin() as db:
        user = users.user_for_token(db, credentials.credentials)
        db.expunge(user)
    return user


def admin_user(user: User = Depends(current_user)) -> User:
    if not user.is_admin:
        raise Forbidden("this needs an admin")
    return user
