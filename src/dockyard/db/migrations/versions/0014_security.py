"""security: token scopes, expiry and last use; secret environment values; share link expiry

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 07:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scope', sa.String(length=16), nullable=False, server_default='all'))
        batch_op.add_column(sa.Column('name', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('secret_env', sa.Text(), nullable=True))
    with op.batch_alter_table('service_ports', schema=None) as batch_op:
        batch_op.add_column(sa.Column('share_expires_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('service_ports', schema=None) as batch_op:
        batch_op.drop_column('share_expires_at')
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('secret_env')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('last_used_at')
        batch_op.drop_column('expires_at')
        batch_op.drop_column('name')
        batch_op.drop_column('scope')
