-- The namespace's tables: their columns, types and row counts (bookkeeping tables left out).
-- Params: none.
SELECT
    c.table_name,
    t.estimated_size AS row_count,
    c.ordinal_position AS position,
    c.column_name,
    c.data_type
FROM information_schema.columns c
JOIN duckdb_tables() t
  ON t.schema_name = c.table_schema AND t.table_name = c.table_name
 AND t.database_name = current_database()
WHERE c.table_schema = current_schema() AND c.table_catalog = current_database()
  AND c.table_name NOT IN ('_imports', '_loads', '_message_ids', 'alembic_version', 'sources')
ORDER BY c.table_name, c.ordinal_position;
