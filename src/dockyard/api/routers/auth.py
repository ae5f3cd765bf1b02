from datetime import timedelta

from fastapi import APIRouter, Depends, Path, Request, Response
from sqlalchemy.orm import Session

from dockyard.api.deps import current_user, get_db, get_platform
from dockyard.core.addresses import client_address
from dockyard.api.schemas import LoginRequest, PasswordChange, TokenInfo, TokenOut, UserOut
from dockyard.db.models import ApiToken, User
from dockyard.services import users
from dockyard.services.platform import Platform

router = APIRouter(tags=["auth"])


@router.post("/auth/login", response_model=TokenOut, responses={429: {"description": "too many failed sign-ins"}})
def login(body: LoginRequest, request: Request, platform: Platform = Depends(get_platform)) -> TokenOut:
    """Check a password and issue an API token (shown once); failures are limited per
    account and per client address, as the console's sign-in."""
    days = body.expires_days or platform.settings.token_lifetime_days
    user = _checked(request, platform, body.user, body.password)
    with platform.sessions.begin() as db:
        token = users.issue_token(db, user, timedelta(days=days), body.scope, body.name)
        row = users.token_for(db, token)
        return TokenOut(token=token, user=user.name, is_admin=user.is_admin, id=row.id, scope=row.scope,
                        expires_at=row.expires_at)


@router.post("/auth/logout", status_code=204)
def logout(request: Request, user: User = Depends(current_user), db: Session = Depends(get_db)) -> Response:
    """Revoke the token this request carries."""
    users.revoke_token(db, user, request.state.token_id)
    _revoked(request, db)
    return Response(status_code=204)


@router.get("/auth/tokens", response_model=list[TokenInfo])
def list_tokens(request: Request, user: User = Depends(current_user), db: Session = Depends(get_db)):
    return [_info(row, request.state.token_id) for row in users.list_tokens(db, user)]


@router.delete("/auth/tokens/{token_id}", status_code=204)
def revoke(request: Request, token_id: int = Path(ge=1, le=2**62), user: User = Depends(current_user),
           db: Session = Depends(get_db)) -> Response:
    users.revoke_token(db, user, token_id)
    _revoked(request, db)
    return Response(status_code=204)


@router.post("/auth/password", status_code=204)
def change_password(body: PasswordChange, request: Request, user: User = Depends(current_user),
                    platform: Platform = Depends(get_platform)) -> Response:
    """A new password; every token (this one too) and browser session of yours ends."""
    _checked(request, platform, user.name, body.current_password)
    password_hash = users.hash_new_password(body.new_password)
    with platform.sessions.begin() as db:
        users.set_password_hash(db, user, password_hash)
        _revoked(request, db)
    return Response(status_code=204)


@router.get("/me", response_model=UserOut)
def me(user: User = Depends(current_user)) -> UserOut:
    return UserOut(name=user.name, is_admin=user.is_admin)


def _checked(request: Request, platform: Platform, name: str, password: str) -> User:
    """The password check, in a read transaction: a slow hash never holds the write lock."""
    with platform.reads.begin() as db:
        user = request.app.state.login_guard.check(db, name, password, client_address(request))
        db.expunge(user)
    return user


def _info(row: ApiToken, current_id: int) -> TokenInfo:
    return TokenInfo(id=row.id, name=row.name, scope=row.scope, created_at=row.created_at, expires_at=row.expires_at,
                     last_used_at=row.last_used_at, current=row.id == current_id)


def _revoked(request: Request, db: Session) -> None:
    """Committed first, so the access paths (which remember callers briefly) cannot re-read it."""
    db.commit()
    request.app.state.platform.access_revoked()
