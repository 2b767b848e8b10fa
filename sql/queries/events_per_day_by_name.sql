-- Track events per day and event name (the name as sent).
-- Params: none.
SELECT CAST(timestamp AS DATE) AS day, name AS event, count(*) AS events
FROM all_events
WHERE call_type = 'track'
GROUP BY day, event
ORDER BY day, events DESC, event;
