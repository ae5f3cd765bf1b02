"""The start queue: an instance waits in status queued for its node's GPUs

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 11:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain columns (no foreign key): SQLite adds them in place, without copying the table.
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('queue_seq', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('queued_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('queue_deadline', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('queue_next', sa.String(length=16), nullable=True))
        batch_op.create_index(batch_op.f('ix_instances_queue_seq'), ['queue_seq'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instances_queue_seq'))
        batch_op.drop_column('queue_next')
        batch_op.drop_column('queue_deadline')
        batch_op.drop_column('queued_at')
        batch_op.drop_column('queue_seq')
