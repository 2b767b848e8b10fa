"""loader.naming against spec/warehouse.md §1.3, §2.1-2.4 and RudderStack's own test tables."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from loader.naming import (
    RESERVED_WORDS,
    SYSTEM_TABLES,
    column_name,
    event_table_name,
    namespace,
    quote,
    snake_case,
    transform_name,
)

# §2.2, every example, with underscoreDivideNumbers false (our mode).
SPEC_2_2 = [
    pytest.param("omega v2", "omega_v2", id="omega-v2"),
    pytest.param("CamelCase123Key", "camel_case123_key", id="camel-case-123"),
    pytest.param("9mega", "_9mega", id="leading-digit"),
    pytest.param("1CComega", "_1cc_omega", id="digit-then-caps"),
    pytest.param("a1b2c3", "a1_b2_c3", id="letter-digit-pairs"),
    pytest.param("userID", "user_id", id="userID"),
    pytest.param("HTTPServer", "http_server", id="acronym"),
    pytest.param("ome$ga", "ome_ga", id="dollar-inside"),
    pytest.param("Cízǔ", "c_z", id="accented"),
    pytest.param("_timestamp", "_timestamp", id="leading-underscore"),
    pytest.param("__timestamp_new", "__timestamp_new", id="two-leading-underscores"),
    pytest.param("path to $1,00,000", "path_to_1_00_000", id="digits-and-commas"),
    pytest.param("1st place", "_1st_place", id="ordinal"),
    pytest.param("_", "_", id="lone-underscore"),
]

# S embedded/warehouse/safe_test.go TestTransformColumnName, underscoreDivideNumbers(false).
GO_PORT_TABLE = [
    pytest.param("&4yasdfa(84224_fs9##_____*3q", "_4yasdfa_84224_fs9_3q", id="symbols"),
    pytest.param("omega", "omega", id="plain"),
    pytest.param("mega&", "mega", id="trailing-symbol"),
    pytest.param("omega$", "omega", id="trailing-dollar"),
    pytest.param("ome_ ga", "ome_ga", id="underscore-space"),
    pytest.param("9mega________-________90", "_9mega_90", id="underscore-runs"),
    pytest.param("test123", "test123", id="letters-digits"),
    pytest.param("abc123def456", "abc123_def456", id="two-groups"),
    pytest.param("abc_123_def_456", "abc_123_def_456", id="already-snake"),
    pytest.param("__abc_123_def_456", "__abc_123_def_456", id="kept-underscores"),
]

MORE_COLUMNS = [
    pytest.param("PMap_nestedMap_n1", "p_map_nested_map_n1", id="§2.1-flattened-key"),
    pytest.param("context_library_name", "context_library_name", id="context-prefix"),
    pytest.param("anonymousId", "anonymous_id", id="camel"),
    pytest.param("select", "_select", id="§2.3-reserved-select"),
    pytest.param("as", "_as", id="§2.3-reserved-as"),
    pytest.param("Group", "_group", id="§2.3-reserved-any-case"),
    pytest.param("current_user", "_current_user", id="§2.3-reserved-with-underscore"),
    pytest.param("_select", "_select", id="escaped-reserved-is-not-reserved"),
    pytest.param("selected", "selected", id="reserved-prefix-only"),
    pytest.param("123", "_123", id="digits-only"),
    pytest.param("2nd_try", "_2nd_try", id="ordinal-with-underscore"),
    pytest.param("日本語 name", "name", id="cjk-dropped"),
    pytest.param("price 💰 usd", "price_usd", id="emoji-separates"),
    pytest.param("it's", "it_s", id="apostrophe-separates-before-snake-case"),
]

DROPPED_COLUMNS = [
    pytest.param("$$$", id="§2.2-dollars"),
    pytest.param("", id="empty"),
    pytest.param("@#$%", id="symbols"),
    pytest.param("💰", id="emoji"),
    pytest.param("日本語", id="cjk"),
    pytest.param("   ", id="spaces"),
]


@pytest.mark.parametrize(("raw", "expected"), SPEC_2_2 + GO_PORT_TABLE + MORE_COLUMNS)
def test_column_name_follows_spec_2_2_and_2_3(raw: str, expected: str) -> None:
    assert column_name(raw) == expected


@pytest.mark.parametrize("raw", DROPPED_COLUMNS)
def test_column_name_is_none_when_nothing_is_left(raw: str) -> None:
    """§2.2 step 5: the column is silently dropped."""
    assert column_name(raw) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("omega v2", "omega_v2", id="space"),
        pytest.param("9mega", "_9mega", id="digit-prefix"),
        pytest.param("__abc_123_def_456", "__abc_123_def_456", id="leading-underscores"),
        pytest.param("groups", "groups", id="§2.4-event-column-stays-groups"),
        pytest.param("Product Added", "product_added", id="§2.4-product-added"),
        pytest.param("select", "select", id="no-reserved-escaping"),
        pytest.param("$$$", "", id="empty"),
    ],
)
def test_transform_name_is_transform_table_name(raw: str, expected: str) -> None:
    """§2.2 steps 1-3: the `event` column value (S safe_test.go TestTransformTableName)."""
    assert transform_name(raw) == expected


def test_transform_name_does_not_cut() -> None:
    """§2.2 step 4: transformTableName has no 63-character limit."""
    assert transform_name("a" * 100) == "a" * 100


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("CamelCase123Key", "camel_case123_key", id="with-numbers"),
        pytest.param("HTTPServer", "http_server", id="acronym"),
        pytest.param("Product Added", "product_added", id="ascii-words"),
        pytest.param("user_ID", "user_id", id="underscore"),
        pytest.param("walk500Steps", "walk500_steps", id="digits-stay-on-word"),
        pytest.param("500Steps", "500steps", id="digits-then-word-is-one-word"),
        pytest.param("ABC123def", "abc123_def", id="upper-digits"),
        pytest.param("XMLHttpRequest", "xml_http_request", id="upper-run-then-word"),
        pytest.param("2ND_place", "2nd_place", id="upper-ordinal"),
        pytest.param("don't", "dont", id="apostrophe-removed"),
        pytest.param("rock\u2019n", "rockn", id="curly-apostrophe-removed"),
        pytest.param("", "", id="empty"),
    ],
)
def test_snake_case_lodash_with_numbers(text: str, expected: str) -> None:
    """§2.2 snake_case, the `with_numbers` alternation."""
    assert snake_case(text) == expected


def test_column_name_cuts_to_63() -> None:
    """§2.2 step 4 and §2.3 step 1: postgres identifiers are cut to 63 characters."""
    assert column_name("a" * 70) == "a" * 63
    assert column_name("ThisIsAReallyLongColumnNameThatExceedsThe63CharacterLimitForPostgres") == (
        "this_is_a_really_long_column_name_that_exceeds_the63_character_"
    )


def test_column_name_cut_happens_before_case_and_keeps_leading_underscores() -> None:
    """§2.2: `_` prefixes from step 2-3 count towards the 63 characters."""
    assert column_name("9" + "a" * 70) == "_9" + "a" * 61
    assert column_name("__" + "b" * 70) == "__" + "b" * 61


def test_reserved_prefix_is_not_cut() -> None:
    """§2.3 step 3: only the 127 cut follows the reserved-word `_`."""
    assert column_name("CURRENT_TIMESTAMP") == "_current_timestamp"
    assert column_name("localtimestamp") == "_localtimestamp"


SPEC_2_3_POSTGRES = """
ALL ANALYSE ANALYZE AND ANY ARRAY AS ASC ASYMMETRIC AUTHORIZATION BETWEEN BINARY
BOTH CASE CAST CHECK COLLATE COLUMN CONSTRAINT CREATE CROSS CURRENT_DATE
CURRENT_ROLE CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER DEFAULT DEFERRABLE DESC
DISTINCT DO ELSE END EXCEPT FALSE FOR FOREIGN FREEZE FROM FULL GRANT GROUP HAVING
ILIKE IN INITIALLY INNER INTERSECT INTO IS ISNULL JOIN LEADING LEFT LIKE LIMIT
LOCALTIME LOCALTIMESTAMP NATURAL NEW NOT NOTNULL NULL OFF OFFSET OLD ON ONLY OR
ORDER OUTER OVERLAPS PLACING PRIMARY REFERENCES RIGHT SELECT SESSION_USER SIMILAR
SOME SYMMETRIC TABLE THEN TO TRAILING TRUE UNION UNIQUE USER USING VERBOSE WHEN
WHERE
"""


def test_reserved_words_are_the_93_postgres_words() -> None:
    """§2.3: T config/ReservedKeywords.json POSTGRES, exactly (copied from the spec)."""
    expected = SPEC_2_3_POSTGRES.split()
    assert len(expected) == 93
    assert set(expected) == RESERVED_WORDS


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        pytest.param("groups", "_groups", id="§2.4-groups"),
        pytest.param("Product Added", "product_added", id="§2.4-product-added"),
        pytest.param("users", "_users", id="§2.4-users"),
        pytest.param("Identifies", "_identifies", id="§2.4-identifies"),
        pytest.param("Tracks", "_tracks", id="§2.4-tracks"),
        pytest.param("pages", "_pages", id="§2.4-pages"),
        pytest.param("screens", "_screens", id="§2.4-screens"),
        pytest.param("aliases", "_aliases", id="§2.4-aliases"),
        pytest.param("accounts", "_accounts", id="§2.4-accounts"),
        pytest.param("_users", "_users", id="already-prefixed"),
        pytest.param("group", "_group", id="§2.3-reserved-table"),
        pytest.param("user", "_user", id="§2.3-reserved-user"),
        pytest.param("Order Completed", "order_completed", id="reserved-word-inside"),
        pytest.param("1st Purchase", "_1st_purchase", id="digit"),
        pytest.param("Añadir al carrito", "a_adir_al_carrito", id="unicode"),
        pytest.param("🎉 Party", "party", id="emoji"),
    ],
)
def test_event_table_name_follows_spec_2_4(event: str, expected: str) -> None:
    assert event_table_name(event) == expected


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        pytest.param("Rudder Discards", "_rudder_discards", id="discards"),
        pytest.param("rudder_identity_merge_rules", "_rudder_identity_merge_rules", id="rules"),
        pytest.param("RudderIdentityMappings", "_rudder_identity_mappings", id="mappings"),
        pytest.param("user graph", "_user_graph", id="user-graph"),
        pytest.param("Unified Users", "_unified_users", id="unified-users"),
        pytest.param("_loads", "__loads", id="load-markers"),
        pytest.param("_message_ids", "__message_ids", id="dedup-keys"),
        pytest.param("alembic_version", "_alembic_version", id="migrations-table"),
        pytest.param("sources", "_sources", id="sources"),
        pytest.param("loads", "loads", id="loads-without-underscore-is-free"),
    ],
)
def test_event_table_name_never_lands_on_a_system_table(event: str, expected: str) -> None:
    """DESIGN.md "differs from RudderStack": our own tables get the `_` like users/tracks."""
    assert event_table_name(event) == expected


def test_system_tables_are_the_design_list() -> None:
    assert {
        "rudder_discards",
        "rudder_identity_merge_rules",
        "rudder_identity_mappings",
        "user_graph",
        "unified_users",
        "_loads",
        "_message_ids",
        "_imports",
        "alembic_version",
        "sources",
        "tracks_with_rudder_id",
        "pages_with_rudder_id",
        "screens_with_rudder_id",
        "identifies_with_rudder_id",
        "all_events",
    } == SYSTEM_TABLES


@pytest.mark.parametrize("event", [pytest.param(e, id=e or "empty") for e in ["", "$$$", "🎉"]])
def test_event_table_name_is_none_for_empty_names(event: str) -> None:
    """§2.4 / T index.js: no event table when the event column is empty."""
    assert event_table_name(event) is None


def test_event_table_name_cuts_to_63_and_prefix_makes_64() -> None:
    """§2.3 step 3: the `_` prefix may make a postgres name 64 characters long."""
    assert event_table_name("e" * 80) == "e" * 63
    assert event_table_name("Select") == "_select"
    assert len(event_table_name("x" * 63) or "") == 63


@pytest.mark.parametrize(
    ("source_name", "expected"),
    [
        # S embedded/warehouse/safe_test.go TestSafeNamespace (strcase.ToSnake splits digits).
        pytest.param("omega", "omega", id="plain"),
        pytest.param("omega v2 ", "omega_v_2", id="space-digit"),
        pytest.param("9mega", "_9_mega", id="leading-digit"),
        pytest.param("mega&", "mega", id="trailing-symbol"),
        pytest.param("ome$ga", "ome_ga", id="dollar"),
        pytest.param("omega$", "omega", id="trailing-dollar"),
        pytest.param("ome_ ga", "ome_ga", id="underscore-space"),
        pytest.param("9mega________-________90", "_9_mega_90", id="underscore-runs"),
        pytest.param("Cízǔ", "c_z", id="accented"),
        pytest.param("Rudderstack", "rudderstack", id="capital"),
        pytest.param("___", "stringempty", id="empty-after-split"),
        pytest.param("group", "_group", id="reserved"),
        pytest.param("k3_namespace", "k_3_namespace", id="letter-digit"),
        # More.
        pytest.param("", "stringempty", id="empty"),
        pytest.param("My Web App", "my_web_app", id="words"),
        pytest.param("JSONData", "json_data", id="acronym"),
        pytest.param("mobileApp", "mobile_app", id="camel"),
        pytest.param("default", "_default", id="reserved-default"),
        pytest.param("main", "main", id="main"),
    ],
)
def test_namespace_is_to_safe_namespace(source_name: str, expected: str) -> None:
    """§1.3 ToSafeNamespace for postgres."""
    assert namespace(source_name) == expected


def test_namespace_cuts_to_127() -> None:
    """§1.3 step 6."""
    assert namespace("s" * 200) == "s" * 127


@pytest.mark.parametrize(
    ("identifier", "expected"),
    [
        pytest.param("tracks", '"tracks"', id="plain"),
        pytest.param("_select", '"_select"', id="underscore"),
        pytest.param('we"ird', '"we""ird"', id="embedded-quote"),
        pytest.param('""', '""""""', id="only-quotes"),
        pytest.param("Mixed Case", '"Mixed Case"', id="case-and-space-kept"),
    ],
)
def test_quote_doubles_embedded_quotes(identifier: str, expected: str) -> None:
    assert quote(identifier) == expected


_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,63}")


@given(st.text(max_size=120))
def test_column_name_is_always_a_plain_identifier(raw: str) -> None:
    """§2.2-2.3: any key becomes None or `[a-z_][a-z0-9_]*` of at most 64, and is stable."""
    name = column_name(raw)
    if name is not None:
        assert _IDENTIFIER.fullmatch(name)
        assert column_name(name) == name
