-- The 20 most frequent track events, with how many distinct people sent each.
-- Params: none.
SELECT
    name AS event,
    count(*) AS events,
    count(DISTINCT coalesce(rudder_id, user_id, anonymous_id)) AS users
FROM all_events
WHERE call_type = 'track'
GROUP BY event
ORDER BY events DESC, event
LIMIT 20;
