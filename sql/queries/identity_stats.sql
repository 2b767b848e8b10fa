-- Identity graph at a glance: identifiers by type, people, merged people, the largest person.
-- Params: none.
WITH sizes AS (
    SELECT rudder_id, count(*) AS identifiers FROM rudder_identity_mappings GROUP BY rudder_id
)
SELECT 'identifiers' AS metric, count(*) AS value FROM rudder_identity_mappings
UNION ALL
SELECT 'identifiers: ' || merge_property_type, count(*)
FROM rudder_identity_mappings GROUP BY merge_property_type
UNION ALL
SELECT 'people (rudder_ids)', count(*) FROM sizes
UNION ALL
SELECT 'people with more than one identifier', count(*) FILTER (WHERE identifiers > 1) FROM sizes
UNION ALL
SELECT 'largest person (identifiers)', coalesce(max(identifiers), 0) FROM sizes
UNION ALL
SELECT 'merge rules', count(*) FROM rudder_identity_merge_rules
UNION ALL
SELECT 'edges', count(*) FROM user_graph
ORDER BY metric;
