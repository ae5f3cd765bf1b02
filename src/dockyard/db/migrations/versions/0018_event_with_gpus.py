"""instance events: whether the run a '-> running' event starts has GPUs, as a column
(billing read it from the event's cause before; NULL on the events written then)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03 00:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain nullable column: SQLite adds it in place, without copying the table.
    with op.batch_alter_table('instance_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('with_gpus', sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('instance_events', schema=None) as batch_op:
        batch_op.drop_column('with_gpus')
