"""Finding a user's own rows (instances, clusters) by id or name: others' answer 404."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.core.errors import NotFound
from dockyard.db.models import User


def get_owned(db: Session, model, user: User, key: str, what: str):
    """A row by id, or by name among the live ones, if `user` may see it (admins see all);
    otherwise 404, never 403, so nobody learns what others have."""
    query = select(model).where((model.id == key) | ((model.name == key) & (model.status != "released")))
    if not user.is_admin:
        query = query.where(model.owner_id == user.id)
    found = db.scalars(query.order_by(model.created_at.desc())).first()
    if found is None:
        raise NotFound(f"{what} {key!r} not found")
    return found


def list_owned(db: Session, model, user: User, include_released: bool = False) -> list:
    query = select(model).order_by(model.created_at)
    if not user.is_admin:
        query = query.where(model.owner_id == user.id)
    if not include_released:
        query = query.where(model.status != "released")
    return list(db.scalars(query))
