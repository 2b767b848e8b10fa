-- The system tables every source namespace has (spec/warehouse.md §1.4), created with the
-- namespace. {namespace} is an identifier quoted by loader.naming.quote. Event tables are not
-- here: they grow from data (loader/schema.py).
CREATE SCHEMA IF NOT EXISTS {namespace};

CREATE TABLE IF NOT EXISTS {namespace}.rudder_discards (
    table_name VARCHAR,
    row_id VARCHAR,
    column_name VARCHAR,
    column_value VARCHAR,
    received_at TIMESTAMPTZ,
    uuid_ts TIMESTAMPTZ,
    reason VARCHAR
);

CREATE TABLE IF NOT EXISTS {namespace}.rudder_identity_merge_rules (
    merge_property_1_type VARCHAR,
    merge_property_1_value VARCHAR,
    merge_property_2_type VARCHAR,
    merge_property_2_value VARCHAR
);

CREATE TABLE IF NOT EXISTS {namespace}.rudder_identity_mappings (
    merge_property_type VARCHAR,
    merge_property_value VARCHAR,
    rudder_id VARCHAR,
    updated_at TIMESTAMPTZ
);

-- One row per edge of the identity graph, with the event that first produced it (issue:
-- identity). Rules with a single identifier are nodes, not edges, and are not here.
CREATE TABLE IF NOT EXISTS {namespace}.user_graph (
    identifier_1_type VARCHAR,
    identifier_1_value VARCHAR,
    identifier_2_type VARCHAR,
    identifier_2_value VARCHAR,
    message_id VARCHAR,
    call_type VARCHAR,
    source VARCHAR,
    received_at TIMESTAMPTZ
);
