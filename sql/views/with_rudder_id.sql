-- {view}: every row of the event table {table} with the rudder_id of its user (issue: identity).
-- The user_id decides when the row has one, else the anonymous_id. {user_key} and
-- {anonymous_key} are the row's columns as VARCHAR, or NULL while the table has no such column.
-- {columns} is `e.*`, or `e.* EXCLUDE (rudder_id)` when events brought a property of that name
-- (the base table keeps it; here the identity graph's rudder_id wins).
CREATE OR REPLACE VIEW {namespace}.{view} AS
SELECT {columns}, coalesce(u.rudder_id, a.rudder_id) AS rudder_id
FROM {namespace}.{table} AS e
LEFT JOIN {namespace}.rudder_identity_mappings AS u
    ON u.merge_property_type = 'user_id' AND u.merge_property_value = {user_key}
LEFT JOIN {namespace}.rudder_identity_mappings AS a
    ON a.merge_property_type = 'anonymous_id' AND a.merge_property_value = {anonymous_key};
