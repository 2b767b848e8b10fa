-- The 100 latest values the warehouse could not store in their column, and why.
-- Params: none.
SELECT uuid_ts AS discarded_at, table_name, column_name, column_value, row_id, reason
FROM rudder_discards
ORDER BY uuid_ts DESC, table_name, column_name, row_id
LIMIT 100;
