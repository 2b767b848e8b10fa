-- Everything one person did, oldest first, across all of their ids (via the identity graph).
-- Params: $id = any identifier as sent (user id, anonymous id, email from a merge) or type:value.
WITH person AS (
    SELECT DISTINCT rudder_id
    FROM rudder_identity_mappings
    WHERE merge_property_value = $id
       OR merge_property_type || ':' || merge_property_value = $id
)
SELECT e.timestamp, e.call_type, e.name, e.user_id, e.anonymous_id, e.id AS message_id
FROM all_events e
WHERE e.rudder_id IN (SELECT rudder_id FROM person)
   OR (e.rudder_id IS NULL AND (e.user_id = $id OR e.anonymous_id = $id))
ORDER BY e.timestamp, e.id;
