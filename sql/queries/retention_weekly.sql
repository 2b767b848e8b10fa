-- Weekly retention: people by the week they were first seen, and how many came back each week.
-- Params: none. Weeks start on Monday; week 0 is the cohort's own week.
WITH activity AS (
    SELECT DISTINCT
        coalesce(rudder_id, user_id, anonymous_id) AS person,
        CAST(date_trunc('week', timestamp) AS DATE) AS week
    FROM all_events
),
cohorts AS (
    SELECT person, min(week) AS cohort_week FROM activity GROUP BY person
),
sizes AS (
    SELECT cohort_week, count(*) AS cohort_size FROM cohorts GROUP BY cohort_week
)
SELECT
    c.cohort_week,
    s.cohort_size,
    CAST(date_diff('week', c.cohort_week, a.week) AS INTEGER) AS week_number,
    count(DISTINCT a.person) AS active_users,
    round(100.0 * count(DISTINCT a.person) / s.cohort_size, 1) AS pct_retained
FROM activity a
JOIN cohorts c USING (person)
JOIN sizes s USING (cohort_week)
GROUP BY c.cohort_week, s.cohort_size, week_number
ORDER BY c.cohort_week, week_number;
