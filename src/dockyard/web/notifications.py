"""The console's notifications page: the signed-in user's own, newest first, and
"mark all read". The header's unread count comes with every page (pages.render)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from dockyard.services import notifications
from dockyard.web.pages import Page, check_csrf, form, page, render

router = APIRouter(include_in_schema=False)


@router.get("/notifications")
def notifications_page(p: Page = Depends(page)) -> HTMLResponse:
    with p.platform.sessions.begin() as db:
        rows = []
        for n in notifications.listed(db, p.user):
            label = p.t(f"notice.{n.kind}")
            rows.append({"id": n.id, "at": n.at.isoformat(), "kind": n.kind, "message": n.message,
                         "label": n.kind if label == f"notice.{n.kind}" else label, "read": n.read_at is not None})
    return render(p, "notifications.html", rows=rows)


@router.post("/notifications/read")
def mark_all_read(data: dict = Depends(form), p: Page = Depends(page)) -> Response:
    check_csrf(p, data.get("csrf"))
    with p.platform.sessions.begin() as db:
        notifications.mark_read(db, p.user)
    return RedirectResponse("/notifications", status_code=303)
