"""The console's admin pages: /admin (nodes, users, prices, the market), images (the catalog and registered
images with build/pull and live progress, users' saved images, delete where safe), the
audit log, and the wallet recharge form. Admins only: others get 404."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, select

from dockyard.core.billing import format_amount
from dockyard.core.errors import DockyardError
from dockyard.core.inputs import ImageIn
from dockyard.core.states import Status
from dockyard.db.models import Instance, Node, User
from dockyard.services import audit, images
from dockyard.services.billing import ledger, prices
from dockyard.web.pages import Page, admin_page, check_csrf, form, form_error, render
from dockyard.web.routes import market_rows

router = APIRouter(include_in_schema=False)


# ---- nodes, users, prices -----------------------------------------------------------------------


@router.get("/admin")
def admin_page_view(p: Page = Depends(admin_page), error: str | None = None) -> HTMLResponse:
    settings = p.platform.settings
    with p.platform.sessions.begin() as db:
        nodes = list(db.scalars(select(Node).order_by(Node.name)))
        node_rows = [{"name": n.name, "url": n.url, "online": n.online, "reason": n.status_reason, "cpus": n.cpus,
                      "memory_gb": round(n.memory_bytes / 2**30, 1), "driver": n.driver_version,
                      "cuda": n.cuda_version} for n in nodes]
        counts = dict(db.execute(select(Instance.owner_id, func.count(Instance.id))
                                 .where(Instance.status != Status.RELEASED).group_by(Instance.owner_id)).all())
        user_rows = [{"name": u.name, "admin": u.is_admin, "instances": counts.get(u.id, 0),
                      "balance": format_amount(ledger.user_balance(db, u.id)), "created_at": u.created_at.isoformat()}
                     for u in db.scalars(select(User).order_by(User.name))]
        price_list = prices.list_prices(db, settings)
        market = market_rows(db)
    return render(p, "admin.html", nodes=node_rows, users=user_rows, prices=price_list, market=market, error=error)


@router.post("/admin/prices")
def admin_set_price(data: dict = Depends(form), p: Page = Depends(admin_page)) -> Response:
    check_csrf(p, data.get("csrf"))
    try:
        with p.platform.sessions.begin() as db:
            prices.set_price(db, data.get("kind", "gpu"), data.get("price", ""), data.get("model", ""),
                              data.get("node", ""), None, by=p.user.name)
    except DockyardError as exc:
        return admin_page_view(p, error=exc.message)
    return RedirectResponse("/admin", status_code=303)


# ---- images -------------------------------------------------------------------------------------


@router.get("/admin/images")
def images_page(p: Page = Depends(admin_page), error: str | None = None) -> HTMLResponse:
    with p.platform.sessions.begin() as db:
        owners = dict(db.execute(select(User.id, User.name)).all())
        rows = [{"name": i.name, "kind": i.kind, "ref": i.ref, "status": i.status, "reason": i.status_reason,
                 "size": i.size_bytes, "digest": i.digest, "owner": owners.get(i.owner_id, ""),
                 "nodes": images.nodes_holding(db, i.id), "public": i.public,
                 "created_at": i.created_at.isoformat()}
                for i in images.list_images(db, p.user)]
    return render(p, "admin_images.html", status_code=400 if error else 200, error=error,
                  shared=[r for r in rows if r["kind"] != "saved"], saved=[r for r in rows if r["kind"] == "saved"])


@router.post("/admin/images")
def register_image(data: dict = Depends(form), p: Page = Depends(admin_page)) -> Response:
    check_csrf(p, data.get("csrf"))
    try:
        body = ImageIn(ref=data.get("ref", "").strip(), name=data.get("name", "").strip())
        images.add_image(p.platform, body.ref, body.name, p.user)
    except (DockyardError, ValidationError) as exc:
        return images_page(p, error=form_error(exc))
    return RedirectResponse("/admin/images", status_code=303)


@router.post("/console/admin/images/{name:path}/prepare")
def prepare_image(name: str, p: Page = Depends(admin_page)) -> JSONResponse:
    """Build or pull on every node, in the background; the page follows it over /events."""
    check_csrf(p, p.request.headers.get("x-csrf-token"))
    try:
        op = images.start_prepare(p.platform, p.user, name, None)
    except DockyardError as exc:
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code)
    return JSONResponse(op.view(), status_code=202)


@router.post("/admin/images/{name:path}/delete")
def delete_image(name: str, data: dict = Depends(form), p: Page = Depends(admin_page)) -> Response:
    check_csrf(p, data.get("csrf"))
    try:
        images.delete_image(p.platform, p.user, name)  # refused while an instance uses it
    except DockyardError as exc:
        return images_page(p, error=exc.message)
    return RedirectResponse("/admin/images", status_code=303)


# ---- audit log ----------------------------------------------------------------------------------


@router.get("/admin/audit")
def audit_page(action: str = "", actor: str = "", page: int = 1, p: Page = Depends(admin_page)) -> HTMLResponse:
    page = max(page, 1)
    with p.platform.sessions.begin() as db:
        rows, total = audit.entries(db, action or None, actor or None, audit.PAGE_SIZE, (page - 1) * audit.PAGE_SIZE)
        entries = [{"at": e.at.isoformat(), "actor": e.actor_name, "action": e.action, "target": e.target,
                    "detail": e.detail} for e in rows]
        known = audit.actions(db)
    pages = max(1, -(-total // audit.PAGE_SIZE))
    return render(p, "admin_audit.html", entries=entries, total=total, page=page, pages=pages, action=action,
                  actor=actor, actions=known)


# ---- wallets ------------------------------------------------------------------------------------


@router.post("/admin/recharge")
def recharge(data: dict = Depends(form), p: Page = Depends(admin_page)) -> Response:
    check_csrf(p, data.get("csrf"))
    try:
        with p.platform.sessions.begin() as db:
            ledger.recharge(db, data.get("user", ""), data.get("amount", ""), by=p.user.name)
    except DockyardError as exc:
        return admin_page_view(p, error=exc.message)
    return RedirectResponse("/admin", status_code=303)
