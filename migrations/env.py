"""Alembic environment: runs on the connection `loader.warehouse.migrate` passes in."""

from __future__ import annotations

from alembic import context
from alembic.ddl.impl import DefaultImpl


class AlembicDuckDBImpl(DefaultImpl):
    """Alembic knows no `duckdb` dialect; DuckDB speaks enough PostgreSQL for our DDL."""

    __dialect__ = "duckdb"


connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
