"""wkd

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('addresses', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('domain', sa.String(length=253), nullable=False, server_default='')
        )
        batch_op.add_column(
            sa.Column('wkd_hash', sa.String(length=32), nullable=False, server_default='')
        )
        batch_op.add_column(sa.Column('wkd_hash_alt', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('wkd_data', sa.LargeBinary(), nullable=True))
        batch_op.create_index('ix_addresses_wkd', ['domain', 'wkd_hash'], unique=False)
        batch_op.create_index('ix_addresses_wkd_alt', ['domain', 'wkd_hash_alt'], unique=False)

    # Existing rows get their domain and hashes; their WKD bodies are made the next time
    # their key is written (an upload, a confirmation, an unpublish).
    from service.core.wkd import domain_of, hashes_for

    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT id, address, user_id FROM addresses")).all()
    for row_id, address, user_id in rows:
        draft, alt = hashes_for(user_id, address)
        connection.execute(
            sa.text(
                "UPDATE addresses SET domain = :d, wkd_hash = :h, wkd_hash_alt = :a WHERE id = :i"
            ),
            {"d": domain_of(address), "h": draft, "a": alt, "i": row_id},
        )



def downgrade() -> None:
    with op.batch_alter_table('addresses', schema=None) as batch_op:
        batch_op.drop_index('ix_addresses_wkd_alt')
        batch_op.drop_index('ix_addresses_wkd')
        batch_op.drop_column('wkd_data')
        batch_op.drop_column('wkd_hash_alt')
        batch_op.drop_column('wkd_hash')
        batch_op.drop_column('domain')

