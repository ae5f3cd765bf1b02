"""volumes: users' own disks, data kept at release, auto-release after days stopped

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 07:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('volumes',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('node_name', sa.String(length=64), nullable=False),
    sa.Column('size_gb', sa.Integer(), nullable=False),
    sa.Column('engine_name', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.Column('instance_id', sa.String(length=32), nullable=True),
    sa.Column('mount_path', sa.String(length=255), nullable=True),
    sa.Column('source_instance_id', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ),
    sa.ForeignKeyConstraint(['node_name'], ['nodes.name'], ),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('engine_name')
    )
    with op.batch_alter_table('volumes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_volumes_instance_id'), ['instance_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_volumes_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index('uq_volumes_owner_name_live', ['owner_id', 'name'], unique=True,
                              sqlite_where=sa.text("status != 'deleted'"),
                              postgresql_where=sa.text("status != 'deleted'"))
    op.create_table('billing_volume_storage',
    sa.Column('volume_id', sa.String(length=32), nullable=False),
    sa.Column('settled_until', sa.DateTime(timezone=True), nullable=False),
    sa.Column('done', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['volume_id'], ['volumes.id'], ),
    sa.PrimaryKeyConstraint('volume_id')
    )
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('keep_data_on_release', sa.Boolean(), server_default=sa.text('true'),
                                      nullable=False))
        batch_op.add_column(sa.Column('keep_data_as', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('auto_release_days', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('release_notice_level', sa.Integer(), server_default=sa.text('0'),
                                      nullable=False))
        batch_op.add_column(sa.Column('release_notice_stop', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('release_notice_stop')
        batch_op.drop_column('release_notice_level')
        batch_op.drop_column('auto_release_days')
        batch_op.drop_column('keep_data_as')
        batch_op.drop_column('keep_data_on_release')
    op.drop_table('billing_volume_storage')
    with op.batch_alter_table('volumes', schema=None) as batch_op:
        batch_op.drop_index('uq_volumes_owner_name_live')
        batch_op.drop_index(batch_op.f('ix_volumes_owner_id'))
        batch_op.drop_index(batch_op.f('ix_volumes_instance_id'))
    op.drop_table('volumes')
