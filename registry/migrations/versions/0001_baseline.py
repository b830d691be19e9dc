"""baseline: models, benchmarks, layer commitments, runs, scores, score jobs

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-26

The schema the registry had when it was created with create_all; databases made that way are stamped
with this revision when first opened (see cortexbox.registry.store.migrate).

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0001'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('benchmark',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('identifier', sa.String(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('data_hash', sa.String(), nullable=False),
    sa.Column('region', sa.String(), nullable=False),
    sa.Column('description', sa.String(), nullable=False),
    sa.Column('citation', sa.String(), nullable=False),
    sa.Column('ceiling', sa.Float(), nullable=True),
    sa.Column('ceiling_error', sa.Float(), nullable=True),
    sa.Column('definition', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('identifier', 'version')
    )
    with op.batch_alter_table('benchmark', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_benchmark_identifier'), ['identifier'], unique=False)

    op.create_table('model',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('version', sa.String(), nullable=False),
    sa.Column('image_ref', sa.String(), nullable=False),
    sa.Column('info', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('model', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_digest'), ['digest'], unique=True)
        batch_op.create_index(batch_op.f('ix_model_name'), ['name'], unique=False)

    op.create_table('layer_commitment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('region', sa.String(), nullable=False),
    sa.Column('layer', sa.String(), nullable=False),
    sa.Column('selection_key', sa.String(), nullable=False),
    sa.Column('layer_scores', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['model.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('model_id', 'region', 'selection_key')
    )
    with op.batch_alter_table('layer_commitment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_layer_commitment_model_id'), ['model_id'], unique=False)

    op.create_table('run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=True),
    sa.Column('benchmark_id', sa.Integer(), nullable=True),
    sa.Column('model_ref', sa.String(), nullable=False),
    sa.Column('benchmark_identifier', sa.String(), nullable=False),
    sa.Column('status', sa.String(), nullable=False),
    sa.Column('failure_class', sa.String(), nullable=True),
    sa.Column('error', sa.String(), nullable=True),
    sa.Column('log_tail', sa.String(), nullable=True),
    sa.Column('timings', sa.JSON(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['benchmark_id'], ['benchmark.id'], ),
    sa.ForeignKeyConstraint(['model_id'], ['model.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('run', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_run_benchmark_id'), ['benchmark_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_run_model_id'), ['model_id'], unique=False)

    op.create_table('score',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('benchmark_id', sa.Integer(), nullable=False),
    sa.Column('raw', sa.Float(), nullable=False),
    sa.Column('error', sa.Float(), nullable=True),
    sa.Column('ceiling', sa.Float(), nullable=True),
    sa.Column('ceiled', sa.Float(), nullable=True),
    sa.Column('layer', sa.String(), nullable=False),
    sa.Column('values', sa.JSON(), nullable=True),
    sa.Column('provenance', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['benchmark_id'], ['benchmark.id'], ),
    sa.ForeignKeyConstraint(['model_id'], ['model.id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['run.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('score', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_score_benchmark_id'), ['benchmark_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_score_model_id'), ['model_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_score_run_id'), ['run_id'], unique=False)

    op.create_table('score_job',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('benchmark_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['benchmark_id'], ['benchmark.id'], ),
    sa.ForeignKeyConstraint(['model_id'], ['model.id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['run.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('score_job', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_score_job_benchmark_id'), ['benchmark_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_score_job_model_id'), ['model_id'], unique=False)



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('score_job', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_score_job_model_id'))
        batch_op.drop_index(batch_op.f('ix_score_job_benchmark_id'))

    op.drop_table('score_job')
    with op.batch_alter_table('score', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_score_run_id'))
        batch_op.drop_index(batch_op.f('ix_score_model_id'))
        batch_op.drop_index(batch_op.f('ix_score_benchmark_id'))

    op.drop_table('score')
    with op.batch_alter_table('run', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_run_model_id'))
        batch_op.drop_index(batch_op.f('ix_run_benchmark_id'))

    op.drop_table('run')
    with op.batch_alter_table('layer_commitment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_layer_commitment_model_id'))

    op.drop_table('layer_commitment')
    with op.batch_alter_table('model', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_name'))
        batch_op.drop_index(batch_op.f('ix_model_digest'))

    op.drop_table('model')
    with op.batch_alter_table('benchmark', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_benchmark_identifier'))

    op.drop_table('benchmark')
