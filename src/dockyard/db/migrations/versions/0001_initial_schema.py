"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-26 14:10:06.082783
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('meta',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('nodes',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('url', sa.String(length=255), nullable=False),
    sa.Column('online', sa.Boolean(), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.Column('cpus', sa.Float(), nullable=False),
    sa.Column('memory_bytes', sa.BigInteger(), nullable=False),
    sa.Column('cpus_per_gpu', sa.Float(), nullable=False),
    sa.Column('memory_per_gpu_bytes', sa.BigInteger(), nullable=False),
    sa.Column('driver_version', sa.String(length=32), nullable=True),
    sa.Column('cuda_version', sa.String(length=16), nullable=True),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('is_admin', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_user_id'), ['user_id'], unique=False)

    op.create_table('gpus',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('node_name', sa.String(length=64), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('uuid', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=64), nullable=False),
    sa.Column('memory_mb', sa.Integer(), nullable=False),
    sa.Column('simulated', sa.Boolean(), nullable=False),
    sa.Column('present', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['node_name'], ['nodes.name'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('node_name', 'index'),
    sa.UniqueConstraint('uuid')
    )
    with op.batch_alter_table('gpus', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gpus_model'), ['model'], unique=False)
        batch_op.create_index(batch_op.f('ix_gpus_node_name'), ['node_name'], unique=False)

    op.create_table('images',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('ref', sa.String(length=255), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('instances',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('node_name', sa.String(length=64), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('gpu_model', sa.String(length=64), nullable=False),
    sa.Column('gpu_count', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.Column('no_gpu', sa.Boolean(), nullable=False),
    sa.Column('env', sa.JSON(), nullable=False),
    sa.Column('command', sa.JSON(), nullable=True),
    sa.Column('data_disk_gb', sa.Integer(), nullable=False),
    sa.Column('container_id', sa.String(length=80), nullable=True),
    sa.Column('container_gpus', sa.JSON(), nullable=False),
    sa.Column('sysdisk_image', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], ),
    sa.ForeignKeyConstraint(['node_name'], ['nodes.name'], ),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_instances_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_status'), ['status'], unique=False)
        batch_op.create_index('uq_instances_owner_name_live', ['owner_id', 'name'], unique=True, sqlite_where=sa.text("status != 'released'"), postgresql_where=sa.text("status != 'released'"))

    op.create_table('gpu_assignments',
    sa.Column('gpu_id', sa.Integer(), nullable=False),
    sa.Column('instance_id', sa.String(length=32), nullable=False),
    sa.Column('assigned_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['gpu_id'], ['gpus.id'], ),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ),
    sa.PrimaryKeyConstraint('gpu_id')
    )
    with op.batch_alter_table('gpu_assignments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gpu_assignments_instance_id'), ['instance_id'], unique=False)

    op.create_table('instance_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('instance_id', sa.String(length=32), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('from_status', sa.String(length=16), nullable=True),
    sa.Column('to_status', sa.String(length=16), nullable=False),
    sa.Column('cause', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('instance_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_instance_events_instance_id'), ['instance_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('instance_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instance_events_instance_id'))

    op.drop_table('instance_events')
    with op.batch_alter_table('gpu_assignments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gpu_assignments_instance_id'))

    op.drop_table('gpu_assignments')
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index('uq_instances_owner_name_live', sqlite_where=sa.text("status != 'released'"), postgresql_where=sa.text("status != 'released'"))
        batch_op.drop_index(batch_op.f('ix_instances_status'))
        batch_op.drop_index(batch_op.f('ix_instances_owner_id'))

    op.drop_table('instances')
    op.drop_table('images')
    with op.batch_alter_table('gpus', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gpus_node_name'))
        batch_op.drop_index(batch_op.f('ix_gpus_model'))

    op.drop_table('gpus')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_user_id'))

    op.drop_table('api_tokens')
    op.drop_table('users')
    op.drop_table('nodes')
    op.drop_table('meta')
