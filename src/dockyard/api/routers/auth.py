from fastapi import APIRouter, Depends

from dockyard.api.deps import current_user, get_platform
from dockyard.api.schemas import LoginRequest, TokenOut, UserOut
from dockyard.db.models import User
from dockyard.services import users
from dockyard.services.platform import Platform

router = APIRouter(tags=["auth"])


@router.post("/auth/login", response_model=TokenOut)
def login(body: LoginRequest, platform: Platform = Depends(get_platform)) -> TokenOut:
    with platform.sessions.begin() as db:
        token = users.login(db, body.user, body.password)
        user = users.user_for_token(db, token)
        return TokenOut(token=token, user=user.name, is_admin=user.is_admin)


@router.get("/me", response_model=UserOut)
def me(user: User = Depends(current_user)) -> UserOut:
    return UserOut(name=user.name, is_admin=user.is_admin)
