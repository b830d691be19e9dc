"""job leases: one score job per (model build, benchmark version), the lease of the worker holding it, one score per job

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

Distributed workers (Celery, at-least-once delivery) need the registry to decide what happened exactly once: a
job is unique on (model_id, benchmark_id), i.e. (image digest, benchmark version); the worker holding a running job
renews ``heartbeat_at``; a score names the job it answers (``score.job_id``, unique). Duplicate jobs of an older
database (there should be none: each version queued one per model) keep only their newest row.

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.execute(
        "DELETE FROM score_job WHERE id NOT IN "
        "(SELECT MAX(j.id) FROM score_job j GROUP BY j.model_id, j.benchmark_id)"
    )
    with op.batch_alter_table('score_job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('worker', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('started_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('task_id', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('cancel_requested', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('failure_class', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('error', sa.String(), nullable=True))
        batch_op.create_unique_constraint('uq_score_job_model_benchmark', ['model_id', 'benchmark_id'])
    with op.batch_alter_table('score', schema=None) as batch_op:
        batch_op.add_column(sa.Column('job_id', sa.Integer(), nullable=True))
        batch_op.create_unique_constraint('uq_score_job_id', ['job_id'])
        batch_op.create_foreign_key('fk_score_job_id', 'score_job', ['job_id'], ['id'])


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('score', schema=None) as batch_op:
        batch_op.drop_constraint('fk_score_job_id', type_='foreignkey')
        batch_op.drop_constraint('uq_score_job_id', type_='unique')
        batch_op.drop_column('job_id')
    with op.batch_alter_table('score_job', schema=None) as batch_op:
        batch_op.drop_constraint('uq_score_job_model_benchmark', type_='unique')
        for column in ('error', 'failure_class', 'cancel_requested', 'task_id', 'attempts', 'finished_at', 'started_at',
                       'heartbeat_at', 'worker'):
            batch_op.drop_column(column)
