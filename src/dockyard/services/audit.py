"""The audit log: what admins did (prices, wallets, users, images, opening another user's
instance). Append-only; each entry is written in the transaction of the change it records,
so a change and its entry commit together or not at all."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dockyard.db.models import AuditEntry, Instance, User

PAGE_SIZE = 50


def record(db: Session, actor: User | str, action: str, target: str, detail: str = "") -> None:
    """`actor` is the admin, or a name where the caller has only that (a name with no
    user behind it, e.g. the server machine's CLI, is kept as given)."""
    if isinstance(actor, str):
        name, actor_id = actor, db.scalars(select(User.id).where(User.name == actor)).first()
    else:
        name, actor_id = actor.name, actor.id
    db.add(AuditEntry(actor_id=actor_id, actor_name=name[:64], action=action[:64], target=target[:128],
                      detail=detail))


def on_instance(db: Session, actor: User, instance: Instance, action: str, detail: str = "") -> None:
    """Record an admin's action on another user's instance (exec, save, share, stop, start,
    release, open); a user's own actions are not audit entries."""
    if not actor.is_admin or instance.owner_id == actor.id:
        return
    owner = db.scalars(select(User.name).where(User.id == instance.owner_id)).first() or "?"
    record(db, actor, f"instance.{action}", f"{owner}/{instance.name} ({instance.id})", detail)


def entries(db: Session, action: str | None = None, actor: str | None = None, limit: int = PAGE_SIZE,
            offset: int = 0) -> tuple[list[AuditEntry], int]:
    """A page of entries, newest first, and how many match in all."""
    query = select(AuditEntry)
    if action:
        query = query.where(AuditEntry.action == action)
    if actor:
        query = query.where(AuditEntry.actor_name == actor)
    total = db.scalar(select(func.count()).select_from(query.subquery()))
    rows = db.scalars(query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit).offset(offset))
    return list(rows), total


def actions(db: Session) -> list[str]:
    """The actions recorded so far, for the filter."""
    return list(db.scalars(select(AuditEntry.action).distinct().order_by(AuditEntry.action)))
