"""image catalog, saved images, node image cache, environment check, SSH keys and ports

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 14:32:25.704228
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('node_images',
    sa.Column('node_name', sa.String(length=64), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=80), nullable=True),
    sa.Column('checked_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['node_name'], ['nodes.name'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('node_name', 'image_id')
    )
    op.create_table('ssh_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('public_key', sa.Text(), nullable=False),
    sa.Column('fingerprint', sa.String(length=80), nullable=False),
    sa.Column('key_type', sa.String(length=16), nullable=False),
    sa.Column('bits', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('user_id', 'fingerprint'),
    sa.UniqueConstraint('user_id', 'name')
    )
    with op.batch_alter_table('ssh_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ssh_keys_user_id'), ['user_id'], unique=False)
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('public_host', sa.String(length=255), nullable=True))

    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), nullable=False, server_default='registered'))
        batch_op.add_column(sa.Column('status', sa.String(length=16), nullable=False, server_default='ready'))
        batch_op.add_column(sa.Column('status_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('owner_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('public', sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column('framework', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('framework_version', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('cuda', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('cudnn', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('python', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('os', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('min_driver', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('is_default', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('description', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('digest', sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column('size_bytes', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('source_instance_id', sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f('ix_images_owner_id'), ['owner_id'], unique=False)
        batch_op.create_foreign_key('fk_images_owner_id_users', 'users', ['owner_id'], ['id'], ondelete='CASCADE')

    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('env_check', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('jupyter_token', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('ssh_port', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('ssh_password', sa.String(length=64), nullable=True))
        batch_op.create_index('uq_instances_node_ssh_port_live', ['node_name', 'ssh_port'], unique=True,
                              sqlite_where=sa.text("status != 'released'"),
                              postgresql_where=sa.text("status != 'released'"))


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index('uq_instances_node_ssh_port_live')
        batch_op.drop_column('ssh_password')
        batch_op.drop_column('ssh_port')
        batch_op.drop_column('jupyter_token')
        batch_op.drop_column('env_check')

    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_constraint('fk_images_owner_id_users', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_images_owner_id'))
        batch_op.drop_column('source_instance_id')
        batch_op.drop_column('size_bytes')
        batch_op.drop_column('digest')
        batch_op.drop_column('description')
        batch_op.drop_column('is_default')
        batch_op.drop_column('min_driver')
        batch_op.drop_column('os')
        batch_op.drop_column('python')
        batch_op.drop_column('cudnn')
        batch_op.drop_column('cuda')
        batch_op.drop_column('framework_version')
        batch_op.drop_column('framework')
        batch_op.drop_column('public')
        batch_op.drop_column('owner_id')
        batch_op.drop_column('status_reason')
        batch_op.drop_column('status')
        batch_op.drop_column('kind')

    op.drop_table('node_images')
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.drop_column('public_host')
    op.drop_table('ssh_keys')
