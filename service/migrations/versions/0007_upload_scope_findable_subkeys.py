"""upload tokens scoped to the addresses an upload showed; subkeys findable by their own id

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Upload tokens issued before have no scope: they may mail nothing.
    op.add_column("tokens", sa.Column("scope", sa.Text(), nullable=True))
    # Rows stored before stay findable until `keydir repair` judges them.
    op.add_column(
        "cert_keys",
        sa.Column("findable", sa.Boolean(), server_default=sa.true(), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("cert_keys", "findable")
    op.drop_column("tokens", "scope")
