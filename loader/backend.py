"""The warehouse backend: everything the loader asks of a database, in one small interface.

DuckDB (loader/warehouse.py, DuckDBWriter) is the one implementation today; a PostgreSQL
backend for multi-node deployments would be one more module implementing these methods. A
backend owns its transactions: `write` applies a whole micro-batch (CREATE TABLE / ADD COLUMN,
rows, users upsert, discards, identity step, load markers or import checkpoint) atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from loader.types import ColumnType

if TYPE_CHECKING:
    from loader.importer import Checkpoint
    from loader.microbatch import Batch
    from loader.warehouse import LoadResult


class Backend(Protocol):
    def tables(self, namespace: str) -> dict[str, dict[str, ColumnType]]:
        """Every table of the namespace with its columns' types, as stored."""
        ...

    def seen(self, keys: Sequence[int]) -> set[int]:
        """Which of these (source, messageId) keys are loaded already."""
        ...

    def write(
        self,
        batch: Batch,
        segments: Sequence[tuple[str, int]] = (),
        checkpoint: Checkpoint | None = None,
    ) -> LoadResult:
        """One micro-batch, with what marks it done, in one transaction."""
        ...

    def loaded(self, segment_id: str) -> bool:
        """Whether a spool segment's load marker is committed."""
        ...

    def checkpoint(self, file_hash: str, source: str) -> Checkpoint | None:
        """How far an import of this file content into this source got."""
        ...

    def install_views(self, namespace: str) -> None:
        """(Re)create the namespace's views for its tables as they are."""
        ...

    def rebuild_identity(self, namespace: str) -> int:
        """Recompute the identity mappings from the stored merge rules."""
        ...
