"""auto-stop rules: GPU idle, a stop time, the start command's or a process's exit; warnings;
the token dockyard-shutdown stops its instance with

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 07:45:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('auto_stop_gpu_idle_minutes', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('auto_stop_gpu_idle_percent', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('auto_stop_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('auto_stop_on_exit', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('auto_stop_when_exits', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('auto_stop_warned_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('auto_stop_kept_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('shutdown_token_hash', sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint('uq_instances_shutdown_token_hash', ['shutdown_token_hash'])


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_constraint('uq_instances_shutdown_token_hash', type_='unique')
        for column in ('shutdown_token_hash', 'auto_stop_kept_at', 'auto_stop_warned_at', 'auto_stop_when_exits', 'auto_stop_on_exit',
                       'auto_stop_at', 'auto_stop_gpu_idle_percent', 'auto_stop_gpu_idle_minutes'):
            batch_op.drop_column(column)
