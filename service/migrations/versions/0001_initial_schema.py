"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "certs",
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("algorithm", sa.Integer(), nullable=False),
        sa.Column("bits", sa.Integer(), nullable=False),
        sa.Column("curve", sa.String(length=40), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("full_data", sa.LargeBinary(), nullable=False),
        sa.Column("published_armor", sa.Text(), nullable=False),
        sa.Column("published_digest", sa.String(length=64), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("fingerprint", name=op.f("pk_certs")),
    )
    with op.batch_alter_table("certs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_certs_key_id"), ["key_id"], unique=False)

    op.create_table(
        "addresses",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("cert_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["cert_fingerprint"],
            ["certs.fingerprint"],
            name=op.f("fk_addresses_cert_fingerprint_certs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_addresses")),
    )
    with op.batch_alter_table("addresses", schema=None) as batch_op:
        batch_op.create_index("ix_addresses_address_state", ["address", "state"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_addresses_cert_fingerprint"), ["cert_fingerprint"], unique=False
        )
        batch_op.create_index(
            "uq_addresses_cert_address", ["cert_fingerprint", "address"], unique=True
        )

    op.create_table(
        "cert_keys",
        sa.Column("cert_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("is_primary", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cert_fingerprint"],
            ["certs.fingerprint"],
            name=op.f("fk_cert_keys_cert_fingerprint_certs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("cert_fingerprint", "fingerprint", name=op.f("pk_cert_keys")),
    )
    with op.batch_alter_table("cert_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cert_keys_fingerprint"), ["fingerprint"], unique=False)
        batch_op.create_index(batch_op.f("ix_cert_keys_key_id"), ["key_id"], unique=False)

    op.create_table(
        "tokens",
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("cert_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=254), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["cert_fingerprint"],
            ["certs.fingerprint"],
            name=op.f("fk_tokens_cert_fingerprint_certs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("hash", name=op.f("pk_tokens")),
    )
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_tokens_cert_fingerprint"), ["cert_fingerprint"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_tokens_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tokens_expires_at"))
        batch_op.drop_index(batch_op.f("ix_tokens_cert_fingerprint"))

    op.drop_table("tokens")
    with op.batch_alter_table("cert_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cert_keys_key_id"))
        batch_op.drop_index(batch_op.f("ix_cert_keys_fingerprint"))

    op.drop_table("cert_keys")
    with op.batch_alter_table("addresses", schema=None) as batch_op:
        batch_op.drop_index("uq_addresses_cert_address")
        batch_op.drop_index(batch_op.f("ix_addresses_cert_fingerprint"))
        batch_op.drop_index("ix_addresses_address_state")

    op.drop_table("addresses")
    with op.batch_alter_table("certs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_certs_key_id"))

    op.drop_table("certs")
