"""The console's package-mirror pages: /mirrors (the site's settings, and the user's own
additions to edit) and /admin/mirrors (the site's, for admins). Refused input is shown
next to the form and changes nothing."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from dockyard.core.errors import DockyardError
from dockyard.core.mirrors import Mirrors
from dockyard.services import audit, mirrors
from dockyard.web.pages import Page, admin_page, check_csrf, form, page, render

router = APIRouter(include_in_schema=False)
FIELDS = ("pip_index_url", "apt_mirror_url", "conda_channel_url", "ca_bundle")


def _page(p: Page, site_form: bool, values: dict | None = None, error: str | None = None) -> HTMLResponse:
    with p.platform.sessions.begin() as db:
        site = asdict(mirrors.get(db, None))
        mine = asdict(mirrors.get(db, p.user))
    editing = values if values is not None else (site if site_form else mine)
    return render(p, "mirrors.html", status_code=400 if error else 200, site=site, values=editing,
                  site_form=site_form, error=error, fields=FIELDS)


def _save(p: Page, data: dict, site_form: bool) -> Response:
    check_csrf(p, data.get("csrf"))
    values = {name: data.get(name) or None for name in FIELDS}
    try:
        with p.platform.sessions.begin() as db:
            saved: Mirrors = mirrors.put(db, None if site_form else p.user, **values)
            if site_form:
                audit.record(db, p.user, "mirrors.site", "site", "set in the console" if not saved.is_empty()
                             else "cleared")
    except DockyardError as exc:
        return _page(p, site_form, values, exc.message)
    return RedirectResponse("/admin/mirrors" if site_form else "/mirrors", status_code=303)


@router.get("/mirrors")
def mine_page(p: Page = Depends(page)) -> HTMLResponse:
    return _page(p, site_form=False)


@router.post("/mirrors")
def save_mine(data: dict = Depends(form), p: Page = Depends(page)) -> Response:
    return _save(p, data, site_form=False)


@router.get("/admin/mirrors")
def site_page(p: Page = Depends(admin_page)) -> HTMLResponse:
    return _page(p, site_form=True)


@router.post("/admin/mirrors")
def save_site(data: dict = Depends(form), p: Page = Depends(admin_page)) -> Response:
    return _save(p, data, site_form=True)
