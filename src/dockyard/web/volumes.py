"""The console's volumes page (docs/volumes.md): list, make, resize and remove your volumes.
Forms post here and go through the same services as the API."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from dockyard.core.errors import DockyardError
from dockyard.core.inputs import VolumeIn
from dockyard.services import volumes
from dockyard.web.pages import Page, check_csrf, form, form_error, page, render

router = APIRouter(include_in_schema=False)


def free_volumes(db, user) -> list[dict]:
    """The create form's picker: the user's volumes no instance mounts."""
    return [{"name": v.name, "size_gb": v.size_gb, "node": v.node_name}
            for v in volumes.list_volumes(db, user) if v.status == "ready" and v.instance_id is None
            and v.owner_id == user.id]


@router.get("/volumes")
def volumes_page(p: Page = Depends(page), error: str | None = None, status_code: int = 200) -> HTMLResponse:
    with p.platform.sessions.begin() as db:
        rows = [volumes.volume_view(db, v) for v in volumes.list_volumes(db, p.user)]
    return render(p, "volumes.html", status_code=status_code, rows=rows, error=error)


def _done(p: Page, action) -> Response:
    try:
        action()
    except (DockyardError, ValidationError, ValueError) as exc:
        return volumes_page(p, error=form_error(exc), status_code=getattr(exc, "status_code", 400))
    return RedirectResponse("/volumes", status_code=303)


@router.post("/volumes")
def create(data: dict = Depends(form), p: Page = Depends(page)) -> Response:
    check_csrf(p, data.get("csrf"))

    def make():
        body = VolumeIn(name=data.get("name", ""), size_gb=int(data.get("size_gb") or 0), node=data.get("node") or None)
        volumes.create_volume(p.platform, p.user, body.name, body.size_gb, body.node)
    return _done(p, make)


@router.post("/volumes/{key}/resize")
def resize(key: str, data: dict = Depends(form), p: Page = Depends(page)) -> Response:
    check_csrf(p, data.get("csrf"))
    return _done(p, lambda: volumes.resize_volume(p.platform, p.user, key, int(data.get("size_gb") or 0)))


@router.post("/volumes/{key}/remove")
def remove(key: str, data: dict = Depends(form), p: Page = Depends(page)) -> Response:
    check_csrf(p, data.get("csrf"))
    return _done(p, lambda: volumes.remove_volume(p.platform, p.user, key))
