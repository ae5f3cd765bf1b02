"""instances: what the node's engine keeps of an instance besides its container (the GPUs
the container was made with, its system disk kept as an image) in one column the runtime
owns, `backend_state`, instead of `container_gpus` and `sysdisk_image`

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03 00:00:00
"""
import json

from alembic import op
import sqlalchemy as sa


revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def _loaded(value):
    """A JSON column's value as the database driver returns it (text on some drivers)."""
    return json.loads(value) if isinstance(value, str) else value


def upgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('backend_state', sa.JSON(), nullable=True))
    bind = op.get_bind()
    instances = sa.table('instances', sa.column('id', sa.String), sa.column('container_gpus', sa.JSON),
                         sa.column('sysdisk_image', sa.String), sa.column('backend_state', sa.JSON))
    for row in bind.execute(sa.select(instances.c.id, instances.c.container_gpus, instances.c.sysdisk_image)).all():
        state = {"gpus": sorted(_loaded(row.container_gpus) or []), "system_disk": row.sysdisk_image}
        bind.execute(instances.update().where(instances.c.id == row.id).values(backend_state=state))
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.alter_column('backend_state', existing_type=sa.JSON(), nullable=False)
        batch_op.drop_column('container_gpus')
        batch_op.drop_column('sysdisk_image')


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('container_gpus', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('sysdisk_image', sa.String(length=128), nullable=True))
    bind = op.get_bind()
    instances = sa.table('instances', sa.column('id', sa.String), sa.column('container_gpus', sa.JSON),
                         sa.column('sysdisk_image', sa.String), sa.column('backend_state', sa.JSON))
    for row in bind.execute(sa.select(instances.c.id, instances.c.backend_state)).all():
        state = _loaded(row.backend_state) or {}
        bind.execute(instances.update().where(instances.c.id == row.id).values(
            container_gpus=state.get("gpus") or [], sysdisk_image=state.get("system_disk")))
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.alter_column('container_gpus', existing_type=sa.JSON(), nullable=False)
        batch_op.drop_column('backend_state')
