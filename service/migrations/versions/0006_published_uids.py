"""published user IDs for the HKP index, made when a key is stored

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows stored before have NULL here; their index is made on request until they change.
    op.add_column("certs", sa.Column("published_uids", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("certs", "published_uids")
