"""console: auto-stop policy, read notifications, the audit log

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 17:50:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('actor_name', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=128), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_at'), ['at'], unique=False)
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('auto_stop_idle_minutes', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('auto_stop_max_minutes', sa.Integer(), nullable=True))
    with op.batch_alter_table('billing_notices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('read_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('billing_notices', schema=None) as batch_op:
        batch_op.drop_column('read_at')
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('auto_stop_max_minutes')
        batch_op.drop_column('auto_stop_idle_minutes')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_at'))
    op.drop_table('audit_log')
