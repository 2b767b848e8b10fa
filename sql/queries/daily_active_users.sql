-- Daily active users: distinct people (identity-resolved) with a track, page or screen per day.
-- Params: none. A person is a rudder_id, or the user_id / anonymous_id before resolution.
SELECT
    CAST(timestamp AS DATE) AS day,
    count(DISTINCT coalesce(rudder_id, user_id, anonymous_id)) AS active_users
FROM all_events
WHERE call_type IN ('track', 'page', 'screen')
GROUP BY day
ORDER BY day;
