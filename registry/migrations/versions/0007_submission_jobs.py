"""submission jobs: one per (submission, attempt) for the workers, with a lease; a submission's filesystem digest

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08

Submissions are scored by issue 12's Celery workers through a job of their own (a ScoreJob is one per (model
build, benchmark version): it would merge two teams' identical images and never rescore). ``submission_job`` is
unique on (submission_id, attempt), so at-least-once delivery claims it once. ``submission.layers_digest`` (the
image's rootfs diff_ids) and ``resembles`` flag a re-labelled copy of another team's image.

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('submission_job',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('submission_id', sa.Integer(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(), nullable=False),
    sa.Column('worker', sa.String(), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.String(), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('failure_class', sa.String(), nullable=True),
    sa.Column('error', sa.String(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['submission_id'], ['submission.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('submission_id', 'attempt')
    )
    op.create_index(op.f('ix_submission_job_submission_id'), 'submission_job', ['submission_id'], unique=False)
    with op.batch_alter_table('submission') as batch:
        batch.add_column(sa.Column('layers_digest', sa.String(), nullable=True))
        batch.add_column(sa.Column('resembles', sa.Integer(), nullable=True))
    op.create_index(op.f('ix_submission_layers_digest'), 'submission', ['layers_digest'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(op.f('ix_submission_layers_digest'), table_name='submission')
    with op.batch_alter_table('submission') as batch:
        batch.drop_column('resembles')
        batch.drop_column('layers_digest')
    op.drop_index(op.f('ix_submission_job_submission_id'), table_name='submission_job')
    op.drop_table('submission_job')
