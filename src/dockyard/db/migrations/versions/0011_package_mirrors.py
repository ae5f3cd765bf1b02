"""package mirrors for instances (site and per user); service ports that keep their path;
images record their locked Python stack

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 07:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('package_mirrors',
    sa.Column('scope', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('pip_index_url', sa.String(length=2048), nullable=True),
    sa.Column('apt_mirror_url', sa.String(length=2048), nullable=True),
    sa.Column('conda_channel_url', sa.String(length=2048), nullable=True),
    sa.Column('ca_bundle', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('scope'),
    sa.UniqueConstraint('user_id')
    )
    with op.batch_alter_table('service_ports', schema=None) as batch_op:
        batch_op.add_column(sa.Column('keep_path', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stack_lock', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('stack_lock_sha256', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_column('stack_lock_sha256')
        batch_op.drop_column('stack_lock')
    with op.batch_alter_table('service_ports', schema=None) as batch_op:
        batch_op.drop_column('keep_path')
    op.drop_table('package_mirrors')
