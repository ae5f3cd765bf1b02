"""Finding a user's own rows (instances, clusters, volumes) by id or name: others' answer 404.

A name means one of the caller's own, admins included (an admin's `stop train` never stops
a user's "train"); an admin reaches another user's row by its id or as `user/name` (in a
URL path, where a segment holds no "/", as `user:name`)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.core.errors import NotFound
from dockyard.db.models import User


def get_owned(db: Session, model, user: User, key: str, what: str, gone: str = "released"):
    """A row by id, by name among the caller's live ones (status not `gone`), or (admins,
    or the owner) by `owner/name`; otherwise 404, never 403, so nobody learns what others have."""
    owner_name, slash, name = key.replace(":", "/", 1).partition("/")
    live = model.status != gone
    if slash:
        if owner_name != user.name and not user.is_admin:
            raise NotFound(f"{what} {key!r} not found")
        query = select(model).join(User, User.id == model.owner_id).where(User.name == owner_name, model.name == name,
                                                                         live)
    else:
        by_id = model.id == key
        if not user.is_admin:
            by_id = by_id & (model.owner_id == user.id)
        query = select(model).where(by_id | ((model.name == key) & live & (model.owner_id == user.id)))
        query = query.order_by((model.id == key).desc())  # an id before a name that looks like one
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
