"""Service ports of instances (TensorBoard's 6006 by default) and their share links."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard.core.errors import Conflict, InvalidInput, NotFound
from dockyard.db.models import Instance, ServicePort

RESERVED = {22: "SSH", 8888: "JupyterLab"}


def check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise InvalidInput(f"port: {port} is outside 1-65535", field="port")
    if port in RESERVED:
        raise InvalidInput(f"port: {port} is reserved for {RESERVED[port]}", field="port")


def expose(db: Session, instance: Instance, port: int, keep_path: bool = False) -> ServicePort:
    check_port(port)
    row = ServicePort(instance_id=instance.id, port=port, keep_path=keep_path)
    db.add(row)
    try:
        db.flush()
    except IntegrityError:
        raise Conflict(f"port {port} is already exposed", field="port") from None
    return row


def find(db: Session, instance: Instance, port: int) -> ServicePort:
    row = db.scalars(select(ServicePort).where(ServicePort.instance_id == instance.id,
                                               ServicePort.port == port)).first()
    if row is None:
        raise NotFound(f"port {port} of instance {instance.name} is not exposed")
    return row


def listed(db: Session, instance: Instance) -> list[ServicePort]:
    return list(db.scalars(select(ServicePort).where(ServicePort.instance_id == instance.id)
                           .order_by(ServicePort.port)))


def share(db: Session, row: ServicePort) -> str:
    """A new unguessable link (the old one, if any, stops working); stored hashed."""
    link = secrets.token_urlsafe(24)
    row.share_hash = hashlib.sha256(link.encode()).hexdigest()
    return link
