"""Images users may create instances from, registered by admins."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard.core.errors import Conflict, InvalidInput, NotFound
from dockyard.db.models import Image
from dockyard.runtimes.base import RuntimeError_
from dockyard.services.platform import Platform


def add_image(platform: Platform, ref: str, name: str, user_id: int) -> Image:
    """Register `ref` as `name`, after checking that every online node has it (or pulls it)."""
    with platform.sessions.begin() as db:
        if db.scalars(select(Image).where(Image.name == name)).first():
            raise Conflict(f"image name {name!r} is already taken", field="name")
    for node, runtime in platform.runtimes.items():
        try:
            runtime.ensure_image(ref)
        except RuntimeError_ as exc:
            raise InvalidInput(f"ref: {exc} (node {node})", field="ref") from None
    try:
        with platform.sessions.begin() as db:
            image = Image(name=name, ref=ref, created_by=user_id)
            db.add(image)
    except IntegrityError:
        raise Conflict(f"image name {name!r} is already taken", field="name") from None
    return image


def list_images(db: Session) -> list[Image]:
    return list(db.scalars(select(Image).order_by(Image.name)))


def find_image(db: Session, name_or_ref: str) -> Image:
    image = db.scalars(select(Image).where(Image.name == name_or_ref)).first()
    image = image or db.scalars(select(Image).where(Image.ref == name_or_ref)).first()
    if image is None:
        raise InvalidInput(f"image: unknown image {name_or_ref!r}; see `dockyard images`", field="image")
    return image


def remove_image(db: Session, name: str) -> None:
    image = db.scalars(select(Image).where(Image.name == name)).first()
    if image is None:
        raise NotFound(f"image {name!r} not found")
    db.delete(image)
