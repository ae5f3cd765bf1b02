"""The audit log: what admins did, newest first. Admins only (others 403, as
the rest of the admin API)."""

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from dockyard.api.deps import admin_user, get_db
from dockyard.api.schemas import AuditOut, AuditPage
from dockyard.services import audit

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(admin_user)])


@router.get("/audit", response_model=AuditPage)
def audit_log(action: str | None = Query(None, max_length=64, description="e.g. price.set"),
              actor: str | None = Query(None, max_length=64, description="the admin's name"),
              limit: int = Query(audit.PAGE_SIZE, ge=1, le=1000), offset: int = Query(0, ge=0),
              db: Session = Depends(get_db)) -> AuditPage:
    rows, total = audit.entries(db, action, actor, limit, offset)
    return AuditPage(total=total, entries=[AuditOut(at=e.at, actor=e.actor_name, action=e.action, target=e.target,
                                                    detail=e.detail) for e in rows])
