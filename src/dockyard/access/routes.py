"""/login/link: the one-time sign-in link that `dockyard jupyter` prints. (The proxied
paths themselves are served by the front, access/front.py, before the application.)"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from dockyard.services import sessions

router = APIRouter(include_in_schema=False)


@router.get("/login/link")
def redeem(request: Request, token: str, next: str = "/"):
    """A one-time link from `dockyard jupyter`: sign this browser in, go on."""
    platform = request.app.state.platform
    if not next.startswith("/") or next.startswith("//"):
        next = "/"
    with platform.sessions.begin() as db:
        session = sessions.redeem_link(db, token)
    response = RedirectResponse(next, status_code=303)
    response.set_cookie(sessions.COOKIE, session, httponly=True, samesite="lax", max_age=7 * 86400,
                        secure=request.url.scheme == "https")
    return response
