-- Funnel: how many people did each step in order, each within the window of their first step.
-- Params: $steps = comma-separated event names as sent (e.g. 'Product Viewed,Order Completed');
--         $window = how long after step 1 the last step may come (e.g. '7 days').
WITH RECURSIVE
steps AS (
    SELECT trim(name) AS name, step
    FROM (
        SELECT unnest(string_split($steps, ',')) AS name,
               unnest(range(1, len(string_split($steps, ',')) + 1)) AS step
    )
),
events AS (
    SELECT coalesce(e.rudder_id, e.user_id, e.anonymous_id) AS person, s.step, e.timestamp AS ts
    FROM all_events e
    JOIN steps s ON e.name = s.name
    WHERE e.call_type = 'track'
),
reached AS (
    SELECT person, 1 AS step, min(ts) AS ts, min(ts) AS started
    FROM events
    WHERE step = 1
    GROUP BY person
    UNION ALL
    SELECT r.person, r.step + 1, min(e.ts), r.started
    FROM reached r
    JOIN events e
      ON e.person = r.person AND e.step = r.step + 1 AND e.ts >= r.ts
     AND e.ts <= r.started + CAST($window AS INTERVAL)
    GROUP BY r.person, r.step, r.started
),
counts AS (
    SELECT s.step, s.name, count(r.person) AS users
    FROM steps s
    LEFT JOIN reached r USING (step)
    GROUP BY s.step, s.name
)
SELECT
    step,
    name AS event,
    users,
    round(100.0 * users / nullif(first_value(users) OVER (ORDER BY step), 0), 1) AS pct_of_first
FROM counts
ORDER BY step;
