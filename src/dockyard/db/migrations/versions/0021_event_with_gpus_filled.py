"""instance events: `with_gpus` filled in on the '-> running' events written before 0018,
from what was known then (the driver's cause, else the instance's no_gpu), so billing reads
the column alone

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 00:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None

events = sa.table('instance_events', sa.column('instance_id', sa.String), sa.column('to_status', sa.String),
                  sa.column('cause', sa.Text), sa.column('with_gpus', sa.Boolean))
instances = sa.table('instances', sa.column('id', sa.String), sa.column('no_gpu', sa.Boolean))


def upgrade() -> None:
    no_gpu = sa.select(instances.c.no_gpu).where(instances.c.id == events.c.instance_id).scalar_subquery()
    with_gpus = sa.case((events.c.cause.like('container started%'), events.c.cause.not_like('%without GPUs%')),
                        else_=sa.not_(sa.func.coalesce(no_gpu, sa.false())))
    op.get_bind().execute(events.update().where(events.c.to_status == 'running', events.c.with_gpus.is_(None))
                          .values(with_gpus=with_gpus))


def downgrade() -> None:
    pass  # the values stay true; 0018's downgrade drops the column
