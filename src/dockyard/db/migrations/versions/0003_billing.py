"""billing: price book, usage segments, ledger, vouchers

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('billing_accounts',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('balance', sa.BigInteger(), nullable=False),
    sa.Column('low_warned', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    with op.batch_alter_table('billing_accounts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_accounts_user_id'), ['user_id'], unique=False)

    op.create_table('billing_notices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('billing_notices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_notices_user_id'), ['user_id'], unique=False)

    op.create_table('billing_postings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('debit', sa.String(length=64), nullable=False),
    sa.Column('credit', sa.String(length=64), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('instance_id', sa.String(length=32), nullable=True),
    sa.Column('segment_id', sa.Integer(), nullable=True),
    sa.Column('period_start', sa.DateTime(timezone=True), nullable=True),
    sa.Column('period_end', sa.DateTime(timezone=True), nullable=True),
    sa.Column('usage_us', sa.BigInteger(), nullable=True),
    sa.Column('memo', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key')
    )
    with op.batch_alter_table('billing_postings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_postings_credit'), ['credit'], unique=False)
        batch_op.create_index(batch_op.f('ix_billing_postings_debit'), ['debit'], unique=False)
        batch_op.create_index(batch_op.f('ix_billing_postings_instance_id'), ['instance_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_billing_postings_segment_id'), ['segment_id'], unique=False)
        batch_op.create_index('ix_billing_postings_user_period', ['user_id', 'period_start'], unique=False)

    op.create_table('billing_prices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('model', sa.String(length=64), nullable=False),
    sa.Column('node', sa.String(length=64), nullable=False),
    sa.Column('price', sa.BigInteger(), nullable=False),
    sa.Column('effective_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('billing_prices', schema=None) as batch_op:
        batch_op.create_index('ix_billing_prices_lookup', ['kind', 'model', 'node', 'effective_from'], unique=False)

    op.create_table('billing_vouchers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expired', sa.Boolean(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('billing_vouchers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_vouchers_user_id'), ['user_id'], unique=False)

    op.create_table('billing_segments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('instance_id', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('start_event_id', sa.Integer(), nullable=False),
    sa.Column('end_event_id', sa.Integer(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('node', sa.String(length=64), nullable=False),
    sa.Column('gpu_model', sa.String(length=64), nullable=False),
    sa.Column('gpu_count', sa.Integer(), nullable=False),
    sa.Column('no_gpu', sa.Boolean(), nullable=False),
    sa.Column('settled_until', sa.DateTime(timezone=True), nullable=False),
    sa.Column('done', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('start_event_id')
    )
    with op.batch_alter_table('billing_segments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_segments_instance_id'), ['instance_id'], unique=False)
        batch_op.create_index('ix_billing_segments_pending', ['done'], unique=False)
        batch_op.create_index(batch_op.f('ix_billing_segments_user_id'), ['user_id'], unique=False)

    op.create_table('billing_storage',
    sa.Column('instance_id', sa.String(length=32), nullable=False),
    sa.Column('settled_until', sa.DateTime(timezone=True), nullable=False),
    sa.Column('done', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ),
    sa.PrimaryKeyConstraint('instance_id')
    )
    with op.batch_alter_table('instance_events', schema=None) as batch_op:
        batch_op.create_index('ix_instance_events_status_at', ['to_status', 'at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('instance_events', schema=None) as batch_op:
        batch_op.drop_index('ix_instance_events_status_at')

    op.drop_table('billing_storage')
    with op.batch_alter_table('billing_segments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_segments_user_id'))
        batch_op.drop_index('ix_billing_segments_pending')
        batch_op.drop_index(batch_op.f('ix_billing_segments_instance_id'))

    op.drop_table('billing_segments')
    with op.batch_alter_table('billing_vouchers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_vouchers_user_id'))

    op.drop_table('billing_vouchers')
    with op.batch_alter_table('billing_prices', schema=None) as batch_op:
        batch_op.drop_index('ix_billing_prices_lookup')

    op.drop_table('billing_prices')
    with op.batch_alter_table('billing_postings', schema=None) as batch_op:
        batch_op.drop_index('ix_billing_postings_user_period')
        batch_op.drop_index(batch_op.f('ix_billing_postings_segment_id'))
        batch_op.drop_index(batch_op.f('ix_billing_postings_instance_id'))
        batch_op.drop_index(batch_op.f('ix_billing_postings_debit'))
        batch_op.drop_index(batch_op.f('ix_billing_postings_credit'))

    op.drop_table('billing_postings')
    with op.batch_alter_table('billing_notices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_notices_user_id'))

    op.drop_table('billing_notices')
    with op.batch_alter_table('billing_accounts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_accounts_user_id'))

    op.drop_table('billing_accounts')
