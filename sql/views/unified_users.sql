-- unified_users: one row per rudder_id (a connected component of the identity graph) with its
-- user ids, anonymous ids and other identifiers (`type:value`) as sorted lists, first_seen and
-- last_seen (event `timestamp`s), its event count, and for each column of `users` the latest
-- non-null value across all of its user ids. {activity} is a UNION ALL of (rudder_id, timestamp)
-- over the *_with_rudder_id views that exist; {traits} selects the users columns.
CREATE OR REPLACE VIEW {namespace}.unified_users AS
WITH ids AS (
    SELECT
        rudder_id,
        coalesce(list(DISTINCT merge_property_value ORDER BY merge_property_value)
            FILTER (WHERE merge_property_type = 'user_id'), []) AS user_ids,
        coalesce(list(DISTINCT merge_property_value ORDER BY merge_property_value)
            FILTER (WHERE merge_property_type = 'anonymous_id'), []) AS anonymous_ids,
        coalesce(list(DISTINCT merge_property_type || ':' || merge_property_value
                      ORDER BY merge_property_type || ':' || merge_property_value)
            FILTER (WHERE merge_property_type NOT IN ('user_id', 'anonymous_id')), [])
            AS other_ids
    FROM {namespace}.rudder_identity_mappings
    GROUP BY rudder_id
),
activity AS (
    SELECT rudder_id, min(timestamp) AS first_seen, max(timestamp) AS last_seen,
           count(*) AS event_count
    FROM ({activity}) AS events
    WHERE rudder_id IS NOT NULL
    GROUP BY rudder_id
),
traits AS ({traits})
SELECT ids.*, activity.first_seen, activity.last_seen,
       coalesce(activity.event_count, 0) AS event_count, traits.* EXCLUDE (rudder_id)
FROM ids
LEFT JOIN activity USING (rudder_id)
LEFT JOIN traits USING (rudder_id);
