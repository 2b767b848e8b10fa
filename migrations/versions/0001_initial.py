"""Sources, load markers, the dedup index and the `main` namespace's system tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

from loader.sqlfiles import statements

revision: str = "0001"
down_revision: str | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE sources (
            name VARCHAR PRIMARY KEY,
            write_key VARCHAR NOT NULL UNIQUE,
            namespace VARCHAR NOT NULL,
            enabled BOOLEAN NOT NULL DEFAULT TRUE,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )
        """
    )
    # One marker per loaded spool segment, committed with its rows (exactly once).
    op.execute(
        """
        CREATE TABLE _loads (
            segment_id VARCHAR PRIMARY KEY,
            events BIGINT NOT NULL,
            loaded_at TIMESTAMPTZ NOT NULL
        )
        """
    )
    # (source, messageId) of every loaded event, hashed to 128 bits: dedup without a scan
    # of the event tables.
    op.execute("CREATE TABLE _message_ids (key UHUGEINT PRIMARY KEY)")
    for statement in statements("namespace/create_tables.sql", namespace="main"):
        op.execute(statement)


def downgrade() -> None:
    for table in ("rudder_identity_mappings", "rudder_identity_merge_rules", "rudder_discards"):
        op.execute(f"DROP TABLE IF EXISTS main.{table}")
    for table in ("_message_ids", "_loads", "sources"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
