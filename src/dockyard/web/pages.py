"""What every console page shares: who is asking (the session cookie), the CSRF check,
form bodies, errors as a form shows them, and rendering with the header's context.

CSRF: every form carries, and every fetch() sends (X-CSRF-Token), an HMAC of the
session token; the sign-in form, which has no session yet, uses a double-submit cookie.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy.orm import Session

from dockyard.core.errors import DockyardError, NotFound
from dockyard.db.models import Instance, User
from dockyard.services import instances, notifications, sessions
from dockyard.services.platform import Platform
from dockyard.web import i18n

HERE = Path(__file__).parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=str(HERE / "templates"))



# ---- who is asking ---------------------------------------------------------------------------


class SignInRequired(Exception):
    pass


@dataclass
class Page:
    request: Request
    user: User | None
    token: str | None
    lang: str
    t: Callable[[str], str]

    @property
    def csrf(self) -> str:
        return csrf_token(self.token) if self.token else ""

    @property
    def platform(self) -> Platform:
        return self.request.app.state.platform


def csrf_token(session_token: str) -> str:
    return hmac.new(session_token.encode(), b"dockyard-console-csrf", hashlib.sha256).hexdigest()


def user_for_cookie(platform: Platform, token: str) -> User | None:
    with platform.reads.begin() as db:
        try:
            user = sessions.user_for(db, token)
        except DockyardError:
            return None
        db.expunge(user)
        return user


def pick_lang(request: Request) -> str:
    return i18n.pick(request.cookies.get(i18n.LANG_COOKIE), request.headers.get("accept-language"))


def optional_page(request: Request) -> Page:
    lang = pick_lang(request)
    token = request.cookies.get(sessions.COOKIE)
    user = user_for_cookie(request.app.state.platform, token) if token else None
    return Page(request, user, token if user else None, lang, i18n.translator(lang))


def page(p: Page = Depends(optional_page)) -> Page:
    if p.user is None:
        raise SignInRequired
    return p


def admin_page(p: Page = Depends(page)) -> Page:
    if not p.user.is_admin:
        raise NotFound("not found")
    return p


async def form(request: Request) -> dict[str, str]:
    """An urlencoded form body, one value per field."""
    body = (await request.body()).decode(errors="replace")
    return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}


def check_csrf(p: Page, given: str | None) -> None:
    if not given or not p.token or not hmac.compare_digest(given, csrf_token(p.token)):
        raise CsrfError


class CsrfError(Exception):
    pass


def render(p: Page, template: str, status_code: int = 200, **context) -> HTMLResponse:
    settings = p.platform.settings
    return templates.TemplateResponse(p.request, template, {
        "p": p, "t": p.t, "user": p.user, "lang": p.lang, "languages": i18n.LANGUAGES, "csrf": p.csrf,
        "currency": settings.currency, "js_strings": i18n.js_strings(p.lang), "path": p.request.url.path,
        "unread": unread_notifications(p.platform, p.user.id) if p.user else 0,  # the header's badge
        **context}, status_code=status_code)


def unread_notifications(platform: Platform, user_id: int) -> int:
    with platform.reads.begin() as db:
        return notifications.unread_count(db, user_id)


def form_error(exc: Exception) -> str:
    """What a refused form shows: the service's message, or which fields are wrong."""
    if isinstance(exc, DockyardError):
        return exc.message
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return str(exc)


def owned_instance(db: Session, p: Page, key: str) -> Instance:
    """The signed-in user's own instance; anyone else's (an admin's view included) is 404 here."""
    instance = instances.get_owned(db, p.user, key)
    if instance.owner_id != p.user.id:
        raise NotFound(f"instance {key!r} not found")
    return instance


def not_found(p: Page) -> HTMLResponse:
    return render(p, "not_found.html", status_code=404)
