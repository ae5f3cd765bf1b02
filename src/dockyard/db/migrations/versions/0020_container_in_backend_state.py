"""instances: the container holding an instance joins the rest of what its engine keeps,
in `backend_state` (key "container"), instead of a column of its own, `container_id`

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04 00:00:00
"""
import json

from alembic import op
import sqlalchemy as sa


revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None

instances = sa.table('instances', sa.column('id', sa.String), sa.column('container_id', sa.String),
                     sa.column('backend_state', sa.JSON))


def _loaded(value):
    """A JSON column's value as the database driver returns it (text on some drivers)."""
    return json.loads(value) if isinstance(value, str) else value


def upgrade() -> None:
    bind = op.get_bind()
    for row in bind.execute(sa.select(instances.c.id, instances.c.container_id, instances.c.backend_state)).all():
        state = {**(_loaded(row.backend_state) or {}), "container": row.container_id}
        bind.execute(instances.update().where(instances.c.id == row.id).values(backend_state=state))
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('container_id')


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('container_id', sa.String(length=80), nullable=True))
    bind = op.get_bind()
    for row in bind.execute(sa.select(instances.c.id, instances.c.backend_state)).all():
        state = dict(_loaded(row.backend_state) or {})
        container = state.pop("container", None)
        bind.execute(instances.update().where(instances.c.id == row.id).values(container_id=container,
                                                                              backend_state=state))
