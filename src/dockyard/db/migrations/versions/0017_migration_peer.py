"""migrations between nodes: the node an instance's disks are being copied to, or still
held on after it moved

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02 20:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('migrate_peer', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('migrate_peer')
