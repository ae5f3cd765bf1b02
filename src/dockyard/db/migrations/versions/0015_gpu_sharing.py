"""GPU sharing: slots per GPU, assignments by slot, shares and milli-GPUs on instances and runs

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 07:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def _assignments_table(slot_keyed: bool) -> None:
    if slot_keyed:
        op.create_table('gpu_assignments',
        sa.Column('slot_id', sa.Integer(), nullable=False),
        sa.Column('gpu_id', sa.Integer(), nullable=False),
        sa.Column('instance_id', sa.String(length=32), nullable=False),
        sa.Column('assigned_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['gpu_id'], ['gpus.id'], ),
        sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ),
        sa.ForeignKeyConstraint(['slot_id', 'gpu_id'], ['gpu_slots.id', 'gpu_slots.gpu_id'], ),
        sa.PrimaryKeyConstraint('slot_id')
        )
        with op.batch_alter_table('gpu_assignments', schema=None) as batch_op:
            batch_op.create_index(batch_op.f('ix_gpu_assignments_gpu_id'), ['gpu_id'], unique=False)
    else:
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


def _drop_assignments() -> list:
    held = op.get_bind().execute(sa.text('SELECT gpu_id, instance_id, assigned_at FROM gpu_assignments')).all()
    with op.batch_alter_table('gpu_assignments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gpu_assignments_instance_id'))
    op.drop_table('gpu_assignments')
    return held


def upgrade() -> None:
    with op.batch_alter_table('gpus', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sharing', sa.String(length=16), nullable=True))
    op.create_table('gpu_slots',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('gpu_id', sa.Integer(), nullable=False),
    sa.Column('slot', sa.Integer(), nullable=False),
    sa.Column('mig_uuid', sa.String(length=64), nullable=True),
    sa.Column('mig_profile', sa.String(length=32), nullable=True),
    sa.Column('memory_mb', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['gpu_id'], ['gpus.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('gpu_id', 'slot'),
    sa.UniqueConstraint('id', 'gpu_id'),
    sa.UniqueConstraint('mig_uuid')
    )
    with op.batch_alter_table('gpu_slots', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gpu_slots_gpu_id'), ['gpu_id'], unique=False)
    # Every GPU known so far is whole: one slot each; what it held, it holds by that slot.
    op.execute('INSERT INTO gpu_slots (gpu_id, slot) SELECT id, 0 FROM gpus')
    held = _drop_assignments()
    _assignments_table(slot_keyed=True)
    bind = op.get_bind()
    for gpu_id, instance_id, assigned_at in held:
        bind.execute(sa.text(
            'INSERT INTO gpu_assignments (slot_id, gpu_id, instance_id, assigned_at) '
            'SELECT id, gpu_id, :instance_id, :assigned_at FROM gpu_slots WHERE gpu_id = :gpu_id'),
            {'gpu_id': gpu_id, 'instance_id': instance_id, 'assigned_at': assigned_at})

    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gpu_share', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('gpu_milli', sa.Integer(), nullable=False, server_default='0'))
    op.execute('UPDATE instances SET gpu_milli = gpu_count * 1000')
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.alter_column('gpu_milli', server_default=None)
    with op.batch_alter_table('billing_segments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gpu_milli', sa.Integer(), nullable=False, server_default='0'))
    op.execute('UPDATE billing_segments SET gpu_milli = gpu_count * 1000')
    with op.batch_alter_table('billing_segments', schema=None) as batch_op:
        batch_op.alter_column('gpu_milli', server_default=None)


def downgrade() -> None:
    with op.batch_alter_table('billing_segments', schema=None) as batch_op:
        batch_op.drop_column('gpu_milli')
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('gpu_milli')
        batch_op.drop_column('gpu_share')
    held = op.get_bind().execute(sa.text('SELECT DISTINCT gpu_id, instance_id FROM gpu_assignments')).all()
    with op.batch_alter_table('gpu_assignments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gpu_assignments_gpu_id'))
    _drop_assignments()
    _assignments_table(slot_keyed=False)
    # Shares do not exist before this revision: a GPU held in parts goes back to one holder.
    seen = set()
    for gpu_id, instance_id in held:
        if gpu_id not in seen:
            seen.add(gpu_id)
            op.get_bind().execute(sa.text(
                'INSERT INTO gpu_assignments (gpu_id, instance_id, assigned_at) VALUES (:g, :i, CURRENT_TIMESTAMP)'),
                {'g': gpu_id, 'i': instance_id})
    with op.batch_alter_table('gpu_slots', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gpu_slots_gpu_id'))
    op.drop_table('gpu_slots')
    with op.batch_alter_table('gpus', schema=None) as batch_op:
        batch_op.drop_column('sharing')
