"""The web console: server-rendered pages (Jinja2), a little JavaScript, live status by
Server-Sent Events. It signs browsers in with the session cookie of services/sessions.py
and calls the same services as the REST API under /api/v1. `install` hooks every page
module's router and the console's error pages into the app."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse

from dockyard.web import admin_pages, autostop, mirrors, monitoring, notifications, routes, volumes
from dockyard.web.pages import CsrfError, SignInRequired


def install(app) -> None:
    """Hook the console into the app: its router and its error pages."""
    for module in (routes, admin_pages, mirrors, monitoring, autostop, notifications, volumes):
        app.include_router(module.router)

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, _exc: SignInRequired):
        if request.headers.get("accept", "").startswith("text/event-stream") or request.method != "GET":
            return JSONResponse({"detail": "sign in first"}, status_code=401)
        return RedirectResponse("/login?next=" + quote(request.url.path), status_code=303)

    @app.exception_handler(CsrfError)
    async def _csrf(_request: Request, _exc: CsrfError):
        return JSONResponse({"detail": "missing or wrong CSRF token; reload the page"}, status_code=403)
