"""clusters: the clusters table and each instance's cluster and rank

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 16:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('clusters',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('members', sa.Integer(), nullable=False),
    sa.Column('gpus_per_member', sa.Integer(), nullable=False),
    sa.Column('gpu_model', sa.String(length=64), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('network_driver', sa.String(length=16), nullable=False),
    sa.Column('network_node', sa.String(length=64), nullable=False),
    sa.Column('subnet', sa.String(length=64), nullable=True),
    sa.Column('master_port', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], ),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_clusters_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index('uq_clusters_owner_name_live', ['owner_id', 'name'], unique=True,
                              sqlite_where=sa.text("status != 'released'"),
                              postgresql_where=sa.text("status != 'released'"))
    # Plain columns (no foreign key): SQLite adds them in place, without copying the table.
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cluster_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('cluster_rank', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_instances_cluster_id'), ['cluster_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instances_cluster_id'))
        batch_op.drop_column('cluster_rank')
        batch_op.drop_column('cluster_id')
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.drop_index('uq_clusters_owner_name_live', sqlite_where=sa.text("status != 'released'"),
                            postgresql_where=sa.text("status != 'released'"))
        batch_op.drop_index(batch_op.f('ix_clusters_owner_id'))
    op.drop_table('clusters')
