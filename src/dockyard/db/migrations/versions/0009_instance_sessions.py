"""instance origins: browser sessions scoped to one instance's host, and their tickets

Revision ID: 0009
Revises: 0006
Create Date: 2026-12-02 07:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('browser_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('instance_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('ticket', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('parent_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_browser_sessions_parent_id'), ['parent_id'], unique=False)
        batch_op.create_foreign_key('fk_browser_sessions_parent_id', 'browser_sessions', ['parent_id'], ['id'],
                                    ondelete='CASCADE')


def downgrade() -> None:
    with op.batch_alter_table('browser_sessions', schema=None) as batch_op:
        batch_op.drop_constraint('fk_browser_sessions_parent_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_browser_sessions_parent_id'))
        batch_op.drop_column('parent_id')
        batch_op.drop_column('ticket')
        batch_op.drop_column('instance_id')
