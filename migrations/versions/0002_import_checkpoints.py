"""Import checkpoints: how far each file (by content hash) has been loaded.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"


def upgrade() -> None:
    # One row per (file content, source). `position` counts the file's lines (NDJSON) or
    # elements (JSON documents) already committed; it moves in the same transaction as the
    # rows it covers.
    op.execute(
        """
        CREATE TABLE _imports (
            file_hash VARCHAR NOT NULL,
            path VARCHAR NOT NULL,
            source VARCHAR NOT NULL,
            position BIGINT NOT NULL,
            events BIGINT NOT NULL,
            completed BOOLEAN NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (file_hash, source)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS _imports")
