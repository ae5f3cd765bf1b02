"""Users' SSH public keys, checked by OpenSSH's own ssh-keygen."""

from __future__ import annotations

import subprocess

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.core.errors import Conflict, NotFound
from dockyard.core.ssh_keys import check_policy, read_fingerprint, single_line
from dockyard.db.models import SshKey, User
from dockyard.db.session import insert_unique


def add_key(db: Session, user: User, name: str, public_key: str) -> SshKey:
    key = single_line(public_key)
    result = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", "-"], input=key, capture_output=True,
                            text=True, timeout=10)
    facts = read_fingerprint(result.stdout if result.returncode == 0 else "")
    check_policy(facts)
    row = SshKey(user_id=user.id, name=name, public_key=key, fingerprint=facts.fingerprint,
                 key_type=facts.type, bits=facts.bits)
    return insert_unique(db, row, Conflict(f"you already have this key or a key named {name!r}", field="public_key"))


def list_keys(db: Session, user: User) -> list[SshKey]:
    return list(db.scalars(select(SshKey).where(SshKey.user_id == user.id).order_by(SshKey.created_at)))


def remove_key(db: Session, user: User, name_or_fingerprint: str) -> None:
    row = db.scalars(select(SshKey).where(
        SshKey.user_id == user.id,
        (SshKey.name == name_or_fingerprint) | (SshKey.fingerprint == name_or_fingerprint),
    )).first()
    if row is None:
        raise NotFound(f"key {name_or_fingerprint!r} not found")
    db.delete(row)


def authorized_keys(db: Session, user_id: int) -> str:
    """The owner's keys, as the instance's /root/.ssh/authorized_keys."""
    keys = db.scalars(select(SshKey.public_key).where(SshKey.user_id == user_id).order_by(SshKey.id))
    return "".join(f"{key}\n" for key in keys)
