"""The operator's package mirrors and each user's additions (core/mirrors.py), stored in
package_mirrors; what a new instance of a user gets."""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy.orm import Session

from dockyard.core import mirrors as core
from dockyard.db.models import PackageMirror, User

SITE = "site"


def _scope(user: User | None) -> str:
    return SITE if user is None else f"user:{user.id}"


def _as_mirrors(row: PackageMirror | None) -> core.Mirrors:
    if row is None:
        return core.Mirrors()
    return core.Mirrors(pip_index_url=row.pip_index_url, apt_mirror_url=row.apt_mirror_url,
                        conda_channel_url=row.conda_channel_url, ca_bundle=row.ca_bundle)


def get(db: Session, user: User | None) -> core.Mirrors:
    """The site's settings (user None) or a user's additions."""
    return _as_mirrors(db.get(PackageMirror, _scope(user)))


def put(db: Session, user: User | None, **values: str | None) -> core.Mirrors:
    """Replace the site's settings or a user's additions; refuses bad input, changing nothing."""
    settings = core.checked(**values)
    row = db.get(PackageMirror, _scope(user))
    if row is None:
        row = PackageMirror(scope=_scope(user), user_id=None if user is None else user.id)
        db.add(row)
    for name, value in asdict(settings).items():
        setattr(row, name, value)
    db.flush()
    return settings


def for_owner(db: Session, owner_id: int) -> tuple[core.Mirrors, core.Mirrors]:
    """(site, user) settings for a new instance of `owner_id`."""
    return _as_mirrors(db.get(PackageMirror, SITE)), _as_mirrors(db.get(PackageMirror, f"user:{owner_id}"))
