"""The only writer of an image's, a cluster's or a volume's status (instances have
lifecycle.py): every change is checked against core/states.py's table for its entity."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from dockyard.core.states import CLUSTER_TRANSITIONS, IMAGE_TRANSITIONS, VOLUME_TRANSITIONS, check_transition
from dockyard.db.models import Cluster, Image, Volume

_TABLES = {Image: ("image", IMAGE_TRANSITIONS), Cluster: ("cluster", CLUSTER_TRANSITIONS),
           Volume: ("volume", VOLUME_TRANSITIONS)}


def set_status(row: Image | Cluster | Volume, new) -> None:
    """Give a loaded row (or a new one, not yet added) its next status, or raise
    IllegalTransition naming the row, its status and `new`."""
    what, table = _TABLES[type(row)]
    check_transition(table, f"{what} {row.name}", row.status, new)
    row.status = new


def change(db: Session, model: type[Image | Cluster | Volume], expected, new, *where, **values) -> int:
    """One conditional UPDATE of the `model` rows matching `where` that are still in
    `expected`: they move to `new` (with `values`). How many moved; two actors cannot
    both win. Refused like `set_status` when the table does not allow the change."""
    what, table = _TABLES[model]
    check_transition(table, what, expected, new)
    statement = update(model).where(*where, model.status == expected).values(status=new, **values)
    return db.execute(statement).rowcount
