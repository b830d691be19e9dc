"""model names: a name on the board belongs to one owner (table model_name), builds keep their digest

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07

Every name already registered goes to the local operator, who registered it, with its first build.

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('model_name',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('owner', sa.String(), nullable=False),
    sa.Column('digest', sa.String(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name'),
    sa.UniqueConstraint('name', 'owner')
    )
    op.execute(
        "INSERT INTO model_name (name, owner, digest, created_at) "
        "SELECT m.name, 'local', m.digest, m.created_at FROM model m "
        "WHERE m.id = (SELECT MIN(o.id) FROM model o WHERE o.name = m.name)"
    )
    with op.batch_alter_table('model', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner', sa.String(), nullable=False, server_default='local'))
        batch_op.create_foreign_key('fk_model_name_owner', 'model_name', ['name', 'owner'], ['name', 'owner'])


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('model', schema=None) as batch_op:
        batch_op.drop_constraint('fk_model_name_owner', type_='foreignkey')
        batch_op.drop_column('owner')
    op.drop_table('model_name')
