"""Service ports of instances (TensorBoard's 6006 by default) and their share links."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.core.errors import Conflict, InvalidInput, NotFound
from dockyard.db.models import Instance, ServicePort, utcnow
from dockyard.db.session import insert_unique

RESERVED = {22: "SSH", 8888: "JupyterLab"}
LINK_NOT_FOUND = "this link does not exist, expired or was revoked"


def check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise InvalidInput(f"port: {port} is outside 1-65535", field="port")
    if port in RESERVED:
        raise InvalidInput(f"port: {port} is reserved for {RESERVED[port]}", field="port")


def expose(db: Session, instance: Instance, port: int, keep_path: bool = False) -> ServicePort:
    check_port(port)
    row = ServicePort(instance_id=instance.id, port=port, keep_path=keep_path)
    return insert_unique(db, row, Conflict(f"port {port} is already exposed", field="port"))


def find(db: Session, instance: Instance, port: int) -> ServicePort:
    row = db.scalars(select(ServicePort).where(ServicePort.instance_id == instance.id,
                                               ServicePort.port == port)).first()
    if row is None:
        raise NotFound(f"port {port} of instance {instance.name} is not exposed")
    return row


def listed(db: Session, instance: Instance) -> list[ServicePort]:
    return list(db.scalars(select(ServicePort).where(ServicePort.instance_id == instance.id)
                           .order_by(ServicePort.port)))


def share(db: Session, row: ServicePort, lifetime: timedelta) -> str:
    """A new unguessable link valid for `lifetime` (the old one, if any, stops working);
    stored hashed."""
    link = secrets.token_urlsafe(24)
    row.share_hash = hashlib.sha256(link.encode()).hexdigest()
    row.share_expires_at = utcnow() + lifetime
    return link


def unshare(row: ServicePort) -> None:
    row.share_hash = row.share_expires_at = None


def shared_port(db: Session, link: str) -> ServicePort:
    """The port behind a live share link. Unknown, revoked and expired links get the same
    answer, which names nothing."""
    row = db.scalars(select(ServicePort).where(ServicePort.share_hash == hashlib.sha256(link.encode()).hexdigest())
                     ).first()
    if row is None or (row.share_expires_at is not None and row.share_expires_at <= utcnow()):
        raise NotFound(LINK_NOT_FOUND)
    return row
