"""Message-id keys without an ART index, so the loader's memory stays bounded.

A PRIMARY KEY gives `_message_ids` an ART index, and DuckDB keeps a whole ART in memory:
about 47 bytes per loaded event, reloaded whole by the first insert after a restart
(467 MB at 10M keys, bench/dedup.py). The loader finds a batch's repeats with one hash join
on this 16-byte column instead (loader/warehouse.py `DuckDBWriter.seen`), which runs in the
buffer pool, under the memory limit, and never reads the event tables. At 10M keys a batch's
probe costs what it did through the index, and its insert an eighth.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"


def upgrade() -> None:
    # DuckDB cannot drop a PRIMARY KEY in place: copy, drop, rename, in the migration's
    # transaction (migrations/env.py), so a crash leaves either table whole.
    op.execute("CREATE TABLE _message_ids_copy (key UHUGEINT NOT NULL)")
    op.execute("INSERT INTO _message_ids_copy SELECT key FROM _message_ids")
    op.execute("DROP TABLE _message_ids")
    op.execute("ALTER TABLE _message_ids_copy RENAME TO _message_ids")


def downgrade() -> None:
    op.execute("CREATE TABLE _message_ids_copy (key UHUGEINT PRIMARY KEY)")
    op.execute("INSERT INTO _message_ids_copy SELECT DISTINCT key FROM _message_ids")
    op.execute("DROP TABLE _message_ids")
    op.execute("ALTER TABLE _message_ids_copy RENAME TO _message_ids")
