-- all_events: one row per track, page, screen and identify call, whichever of those tables
-- exist, with the person's rudder_id: id, call_type, name (the track's event as sent, or the
-- page/screen name), user_id and anonymous_id as VARCHAR, rudder_id, timestamp, received_at.
-- The named queries (sql/queries/) build on it. {selects} is a UNION ALL, one per table.
CREATE OR REPLACE VIEW {namespace}.all_events AS {selects};
