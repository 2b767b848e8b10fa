"""loader.flatten against spec/warehouse.md §1.1, §1.2, §2.1 and §5.1: one event in, rows out."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, strategies as st

from loader import flatten
from loader.flatten import MAX_COLUMNS, MergeRule, Row, TooManyColumns, Transformed, transform
from loader.naming import transform_name
from loader.schema import ArrayText, valid_timestamp
from loader.types import ColumnType, Event

RECEIVED = "2024-05-14T09:21:33.512Z"
SENT = "2024-05-14T09:21:33.101Z"
ORIGINAL = "2024-05-14T09:21:32.877Z"
TIMESTAMP = "2024-05-14T09:21:33.288Z"
REQUEST_IP = "203.0.113.7"

Columns = dict[str, tuple[Any, ColumnType]]

# §1.1 for envelope(): every rule column it produces, with the library context.
RULES: Columns = {
    "id": ("msg-1", "string"),
    "anonymous_id": ("anon-1", "string"),
    "user_id": ("user-1", "string"),
    "sent_at": (SENT, "datetime"),
    "timestamp": (TIMESTAMP, "datetime"),
    "received_at": (RECEIVED, "datetime"),
    "original_timestamp": (ORIGINAL, "datetime"),
    "channel": ("web", "string"),
    "context_ip": (REQUEST_IP, "string"),
    "context_request_ip": (REQUEST_IP, "string"),
    "context_library_name": ("analytics-python", "string"),
    "context_library_version": ("2.2.2", "string"),
}


def envelope(call: str, **fields: Any) -> Event:
    """An event as spec.validate + enrich hand it over; `fields` replace or add keys."""
    event: Event = {
        "type": call,
        "messageId": "msg-1",
        "anonymousId": "anon-1",
        "userId": "user-1",
        "channel": "web",
        "rudderId": "rudder-1",
        "request_ip": REQUEST_IP,
        "receivedAt": RECEIVED,
        "sentAt": SENT,
        "originalTimestamp": ORIGINAL,
        "timestamp": TIMESTAMP,
        "context": {"library": {"name": "analytics-python", "version": "2.2.2"}},
    }
    event.update(fields)
    return event


def row(table: str, columns: Columns) -> Row:
    return Row(
        table,
        {column: value for column, (value, _) in columns.items()},
        {column: kind for column, (_, kind) in columns.items()},
    )


def only_row(event: Event) -> Row:
    rows = transform(event).rows
    assert len(rows) == 1
    return rows[0]


def event_row(event: Event) -> Row:
    """The event table row of a track (the second row)."""
    rows = transform(event).rows
    assert [r.table for r in rows][:1] == ["tracks"]
    assert len(rows) == 2
    return rows[1]


ANON_USER = MergeRule("anonymous_id", "anon-1", "user_id", "user-1")


# ---- golden tests, one per call type (§1.2) ----


def test_track_golden() -> None:
    """§1.2 track: `tracks` (context_*, event_text, rules, event), then the event table
    (properties, then userProperties, the common columns over them), then the merge rule."""
    event = envelope(
        "track",
        event="Product Added",
        context={
            "library": {"name": "analytics.js", "version": "3.0.3"},
            "page": {"url": "https://shop.example.com/p?x=1", "referrer": ""},
            "userAgent": "Mozilla/5.0",
            "screen": {"width": 1512, "density": 2.0},
            "traits": {"email": "ada@example.com", "plan": None},
            "ip": "198.51.100.9",
            "locale": "en-US",
            "os": {},
        },
        properties={
            "price": 129.99,
            "quantity": 1,
            "in_stock": True,
            "gift": False,
            "zero": 0,
            "tags": ["running", "trail"],
            "sizes": [],
            "notes": [""],
            "nested_empty": [[]],
            "nulls": [None],
            "variant": {"color": "blue", "size": {"eu": 42, "us": 9.5}},
            "Nested Map": {"innerKey": "v"},
            "releasedAt": "2024-03-01 08:00:00",
            "coupon": "",
            "discount": None,
            "id": "dropped: a rule column",
            "event_text": "dropped: a rule column",
            "event": "overwritten by the common part",
        },
        userProperties={"tier": "gold", "price": 1},
    )
    common: Columns = {
        "context_library_name": ("analytics.js", "string"),
        "context_library_version": ("3.0.3", "string"),
        "context_page_url": ("https://shop.example.com/p?x=1", "string"),
        "context_user_agent": ("Mozilla/5.0", "string"),
        "context_screen_width": (1512, "int"),
        "context_screen_density": (2, "int"),
        "context_traits_email": ("ada@example.com", "string"),
        "context_locale": ("en-US", "string"),
        "event_text": ("Product Added", "string"),
        "id": ("msg-1", "string"),
        "anonymous_id": ("anon-1", "string"),
        "user_id": ("user-1", "string"),
        "sent_at": (SENT, "datetime"),
        "timestamp": (TIMESTAMP, "datetime"),
        "received_at": (RECEIVED, "datetime"),
        "original_timestamp": (ORIGINAL, "datetime"),
        "channel": ("web", "string"),
        "context_ip": ("198.51.100.9", "string"),
        "context_request_ip": (REQUEST_IP, "string"),
        "context_passed_ip": ("198.51.100.9", "string"),
        "event": ("product_added", "string"),
    }
    properties: Columns = {
        "price": (1, "int"),  # userProperties come after properties
        "quantity": (1, "int"),
        "in_stock": (True, "boolean"),
        "gift": (False, "boolean"),
        "zero": (0, "int"),
        "tags": ('["running","trail"]', "string"),
        "nulls": ("[null]", "string"),
        "variant_color": ("blue", "string"),
        "variant_size_eu": (42, "int"),
        "variant_size_us": (9.5, "float"),
        "nested_map_inner_key": ("v", "string"),
        "released_at": ("2024-03-01T08:00:00.000Z", "datetime"),
        "tier": ("gold", "string"),
    }
    assert transform(event) == Transformed(
        [row("tracks", common), row("product_added", {**properties, **common})], ANON_USER
    )
    assert isinstance(transform(event).rows[1].data["tags"], ArrayText)


def test_identify_golden() -> None:
    """§1.2 identify: userProperties, traits, context_*, rules; reserved trait names dropped;
    no `users` row (§4) and no uuid_ts."""
    event = envelope(
        "identify",
        userId=123,
        userProperties={"name": "overwritten by traits", "score": 1.5},
        traits={
            "name": "Ada",
            "email": "ada@example.com",
            "address": {"city": "London", "zip": None},
            "logins": 3,
            "createdAt": "2020-01-01T00:00:00Z",
            "id": "dropped",
            "user_id": "dropped",
            "userId": "dropped",
            "anonymousId": "dropped",
            "sentAt": "dropped",
            "channel": "dropped",
            "context_ip": "dropped",
        },
        context={
            "library": {"name": "analytics-python", "version": "2.2.2"},
            "traits": {"email": "ada@example.com"},
        },
    )
    expected: Columns = {
        "name": ("Ada", "string"),
        "score": (1.5, "float"),
        "email": ("ada@example.com", "string"),
        "address_city": ("London", "string"),
        "logins": (3, "int"),
        "created_at": ("2020-01-01T00:00:00.000Z", "datetime"),
        "context_traits_email": ("ada@example.com", "string"),
        **RULES,
        "user_id": (123, "int"),
    }
    assert transform(event) == Transformed(
        [row("identifies", expected)], MergeRule("anonymous_id", "anon-1", "user_id", "123")
    )


@pytest.mark.parametrize(
    ("call", "table", "name", "properties", "expected_name"),
    [
        pytest.param("page", "pages", "Pricing", {"name": "Old"}, "Pricing", id="page-name"),
        pytest.param("page", "pages", None, {"name": "Home"}, "Home", id="page-from-properties"),
        pytest.param("screen", "screens", "", {"name": "Cart"}, "Cart", id="screen-blank-name"),
        pytest.param("screen", "screens", "Feed", {}, "Feed", id="screen-name"),
        pytest.param("page", "pages", None, {}, None, id="page-no-name"),
        pytest.param("page", "pages", {"a": 1}, {"name": "Home"}, None, id="object-name-removed"),
    ],
)
def test_page_and_screen_golden(
    call: str, table: str, name: Any, properties: dict[str, Any], expected_name: str | None
) -> None:
    """§1.2 page/screen: properties, context_*, rules, then `name` = first non-blank of name and
    properties.name (an object there removes the column; `name` as a property is a rule column)."""
    event = envelope(call, properties={**properties, "path": "/pricing"})
    if name is not None:
        event["name"] = name
    expected: Columns = {"path": ("/pricing", "string"), **RULES}
    if expected_name is not None:
        expected["name"] = (expected_name, "string")
    assert transform(event) == Transformed([row(table, expected)], ANON_USER)


def test_group_golden() -> None:
    """§1.2 group: traits (no prefix), context_*, rules, group_id."""
    event = envelope(
        "group",
        groupId="g-1",
        traits={"name": "Acme", "employees": 42, "group_id": "dropped", "plan": {"tier": 2}},
    )
    expected: Columns = {
        "name": ("Acme", "string"),
        "employees": (42, "int"),
        "plan_tier": (2, "int"),
        **RULES,
        "group_id": ("g-1", "string"),
    }
    assert transform(event) == Transformed([row("groups", expected)], ANON_USER)


def test_alias_golden() -> None:
    """§1.2 alias: traits, context_*, rules, previous_id; §5.1 rule (userId, previousId)."""
    event = envelope("alias", previousId="old-1", traits={"note": "merged", "previous_id": "x"})
    expected: Columns = {
        "note": ("merged", "string"),
        **RULES,
        "previous_id": ("old-1", "string"),
    }
    assert transform(event) == Transformed(
        [row("aliases", expected)], MergeRule("user_id", "user-1", "user_id", "old-1")
    )


def test_merge_golden() -> None:
    """§1.2 merge: no rows, only the rule; a numeric value is stringified as JSON text."""
    event = envelope(
        "merge",
        mergeProperties=[
            {"type": "email", "value": "a@x.com"},
            {"type": "phone", "value": 5551234},
        ],
    )
    assert transform(event) == Transformed([], MergeRule("email", "a@x.com", "phone", "5551234"))


# ---- track: the event column and the event table (§1.2, §2.4) ----


@pytest.mark.parametrize(
    ("name", "event_column", "table"),
    [
        pytest.param("Product Added", "product_added", "product_added", id="product-added"),
        pytest.param("groups", "groups", "_groups", id="rudder-table-prefixed"),
        pytest.param("Identifies", "identifies", "_identifies", id="isolated-table-prefixed"),
        pytest.param("Rudder Discards", "rudder_discards", "_rudder_discards", id="our-table"),
        pytest.param("select", "select", "_select", id="reserved-word"),
        pytest.param("1st Purchase", "_1st_purchase", "_1st_purchase", id="leading-digit"),
        pytest.param("a" * 70, "a" * 70, "a" * 63, id="table-cut-event-not"),
    ],
)
def test_track_event_column_and_table(name: str, event_column: str, table: str) -> None:
    """`event` = transformTableName (no cut, no prefix); the table gets the §2.3/§2.4 rules."""
    rows = transform(envelope("track", event=name)).rows
    assert [r.table for r in rows] == ["tracks", table]
    assert rows[0].data["event"] == rows[1].data["event"] == event_column
    assert rows[0].data["event_text"] == name


@pytest.mark.parametrize(
    "name", ["$$$", "", "  ", "€€"], ids=["dollars", "empty", "spaces", "euro"]
)
def test_track_without_event_table(name: str) -> None:
    """§1.2: an event name that converts to nothing gives the tracks row only, no merge rule."""
    result = transform(envelope("track", event=name, properties={"a": 1}))
    assert [r.table for r in result.rows] == ["tracks"]
    assert result.rows[0].data["event"] == ""
    assert result.merge_rule is None


def test_track_timestamp_like_event_name_uses_normalized_event_text() -> None:
    """T reads `event` from the event_text column, which infer already rewrote (§3.1)."""
    result = transform(envelope("track", event="2020-01-01"))
    tracks = result.rows[0]
    assert tracks.data["event_text"] == "2020-01-01T00:00:00.000Z"
    assert tracks.types["event_text"] == "datetime"
    assert tracks.data["event"] == transform_name("2020-01-01T00:00:00.000Z")


# ---- flattening (§2.1) ----


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="null"),
        pytest.param("", None, id="empty-string"),
        pytest.param([], None, id="empty-array"),
        pytest.param([""], None, id="array-of-empty-string"),
        pytest.param([[]], None, id="array-of-empty-array"),
        pytest.param([[""]], None, id="deeper-blank-array"),
        pytest.param({}, None, id="empty-object"),
        pytest.param([None], ("[null]", "string"), id="array-of-null-kept"),
        pytest.param([None, None], ("[null,null]", "string"), id="two-nulls-kept"),
        pytest.param(["", ""], ('["",""]', "string"), id="two-empty-strings-kept"),
        pytest.param([0], ("[0]", "string"), id="array-zero-kept"),
        pytest.param([False], ("[false]", "string"), id="array-false-kept"),
        pytest.param([{}], ("[{}]", "string"), id="array-empty-object-kept"),
        pytest.param([{"a": {"b": 1}}], ('[{"a":{"b":1}}]', "string"), id="array-not-flattened"),
        pytest.param(0, (0, "int"), id="zero-kept"),
        pytest.param(False, (False, "boolean"), id="false-kept"),
        pytest.param(" ", (" ", "string"), id="space-kept"),
        pytest.param("1", ("1", "string"), id="numeric-string"),
        pytest.param(-3.0, (-3, "int"), id="integral-float"),
        pytest.param(
            "2020-01-01T10:20:30+05:30", ("2020-01-01T04:50:30.000Z", "datetime"), id="timestamp"
        ),
    ],
)
def test_property_values(value: Any, expected: tuple[Any, ColumnType] | None) -> None:
    """§2.1 blanks (lodash isEmpty(toString(v))) are skipped; arrays stay JSON text (§3.2)."""
    data = event_row(envelope("track", event="E", properties={"p": value}))
    if expected is None:
        assert "p" not in data.data
        assert "p" not in data.types
    else:
        assert (data.data["p"], data.types["p"]) == expected


@pytest.mark.parametrize(
    ("properties", "column", "expected"),
    [
        pytest.param({"user_name": 1, "userName": 2}, "user_name", 1, id="sorted-later-wins"),
        pytest.param({"userName": 2, "user_name": 1}, "user_name", 1, id="insertion-order-moot"),
        pytest.param({"a_b": 2, "a": {"b": 1}}, "a_b", 2, id="flat-after-nested"),
        pytest.param({"a": {"b": 1}, "a_b": 2}, "a_b", 2, id="nested-before-flat"),
        pytest.param({"$1": "named", "1": "index"}, "_1", "named", id="integer-keys-first"),
        pytest.param({"1": "index", "$1": "named"}, "_1", "named", id="integer-keys-first-2"),
    ],
)
def test_colliding_keys_resolve_in_rudderstack_order(
    properties: dict[str, Any], column: str, expected: Any
) -> None:
    """§2.1 collisions: the last key written wins, in the order RudderStack walks keys (the
    gateway re-marshals events with sorted keys; JS takes integer-like keys first)."""
    assert event_row(envelope("track", event="E", properties=properties)).data[column] == expected


def test_context_traits_string_like_object_becomes_one_column() -> None:
    """§2.1: context.traits {"0":"f","1":"o","2":"o"} -> context_traits = "foo"."""
    event = envelope("track", event="E", context={"traits": {"0": "f", "1": "o", "2": "o"}})
    tracks = transform(event).rows[0]
    assert (tracks.data["context_traits"], tracks.types["context_traits"]) == ("foo", "string")
    assert not [c for c in tracks.data if c.startswith("context_traits_")]


@pytest.mark.parametrize(
    ("traits", "expected"),
    [
        pytest.param({"1": "a", "2": "b"}, {"context_traits": "ab"}, id="from-one"),
        pytest.param(
            {"0": "f", "2": "o"}, {"context_traits_0": "f", "context_traits_2": "o"}, id="gap"
        ),
        pytest.param({"0": "fo"}, {"context_traits_0": "fo"}, id="two-chars"),
        pytest.param({"0": "\U0001f600"}, {"context_traits_0": "\U0001f600"}, id="two-utf16-units"),
        pytest.param({"00": "a"}, {"context_traits_00": "a"}, id="not-canonical"),
    ],
)
def test_context_traits_string_like_edges(traits: dict[str, Any], expected: dict[str, Any]) -> None:
    """T isStringLikeObject: keys 0..n-1 or 1..n, values of one UTF-16 unit."""
    data = only_row(envelope("identify", context={"traits": traits})).data
    assert {c: v for c, v in data.items() if c.startswith("context_traits")} == expected


def test_group_string_like_traits_are_dropped() -> None:
    """§2.1: for group traits a string-like object is dropped, not joined."""
    data = only_row(envelope("group", groupId="g", traits={"0": "a", "1": "b"})).data
    assert {c: v for c, v in data.items() if c not in RULES} == {"group_id": "g"}


def test_identify_string_like_traits_are_flattened() -> None:
    """Only context.traits and group traits have the string-like rule."""
    data = only_row(envelope("identify", traits={"0": "a", "1": "b"})).data
    assert (data["_0"], data["_1"]) == ("a", "b")


def test_user_key_uuid_ts_is_kept() -> None:
    """§2.1 quirk: uuid_ts is not a rule column; the warehouse replaces its value at load."""
    data = event_row(envelope("track", event="E", properties={"uuid_ts": "mine"}))
    assert data.data["uuid_ts"] == "mine"


def test_deep_nesting_joins_raw_keys_before_converting() -> None:
    """§2.1: properties.PMap.nestedMap.n1 -> PMap_nestedMap_n1 -> p_map_nested_map_n1."""
    event = envelope("track", event="E", properties={"PMap": {"nestedMap": {"n1": "v"}}})
    assert event_row(event).data["p_map_nested_map_n1"] == "v"


# ---- default rules (§1.1) ----


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        pytest.param("1.1.1.1", ("1.1.1.1", "1.1.1.1"), id="context-ip-first"),
        pytest.param(None, (REQUEST_IP, None), id="missing-falls-back"),
        pytest.param("", (REQUEST_IP, None), id="blank-falls-back"),
        pytest.param({"v": 4}, (None, None), id="object-removes"),
    ],
)
def test_context_ip_rules(ip: Any, expected: tuple[str | None, str | None]) -> None:
    """§1.1: context_ip = first non-blank of context.ip and request_ip; passed_ip = context.ip."""
    context: dict[str, Any] = {} if ip is None else {"ip": ip}
    data = only_row(envelope("page", context=context)).data
    assert (data.get("context_ip"), data.get("context_passed_ip")) == expected
    assert data["context_request_ip"] == REQUEST_IP


@pytest.mark.parametrize(
    ("field", "value", "column", "expected"),
    [
        pytest.param("userId", 42, "user_id", (42, "int"), id="numeric-user-id"),
        pytest.param("userId", 4.5, "user_id", (4.5, "float"), id="float-user-id"),
        pytest.param("userId", "", "user_id", None, id="blank-removed"),
        pytest.param("userId", ["u"], "user_id", None, id="array-removed"),
        pytest.param("anonymousId", {"a": 1}, "anonymous_id", None, id="object-removed"),
        pytest.param("channel", True, "channel", (True, "boolean"), id="boolean-channel"),
        pytest.param(
            "sentAt",
            "2024-05-14T10:21:33.1+01:00",
            "sent_at",
            ("2024-05-14T09:21:33.100Z", "datetime"),
            id="time-normalized",
        ),
        pytest.param("sentAt", "soon", "sent_at", ("soon", "string"), id="time-not-a-timestamp"),
        pytest.param("messageId", 7, "id", (7, "int"), id="numeric-message-id"),
    ],
)
def test_default_rule_values(
    field: str, value: Any, column: str, expected: tuple[Any, ColumnType] | None
) -> None:
    """§1.1: set only from a non-blank scalar (typed by §3.1), else removed."""
    result = only_row(envelope("identify", **{field: value}))
    if expected is None:
        assert column not in result.data
        assert column not in result.types
    else:
        assert (result.data[column], result.types[column]) == expected


def test_default_rules_beat_user_keys_through_reserved_names() -> None:
    """§2.1 reserved columns: properties never set a rule column, even when its rule is blank."""
    event = envelope(
        "page", anonymousId="", properties={"anonymous_id": "from-props", "context_ip": "9.9.9.9"}
    )
    data = only_row(event).data
    assert "anonymous_id" not in data
    assert data["context_ip"] == REQUEST_IP


def test_invalid_received_at_falls_back_to_now() -> None:
    """§1.1 received_at: T replaces a blank or invalid receivedAt (enrich never sends one)."""
    data = only_row(envelope("identify", receivedAt="yesterday"))
    assert data.types["received_at"] == "datetime"
    assert valid_timestamp(data.data["received_at"]) == data.data["received_at"]


def test_transform_leaves_the_event_alone() -> None:
    """Pure: the spooled event is not mutated (T itself rewrites messageId and receivedAt)."""
    event = envelope("track", event="E", messageId="", properties={"a": {"b": [1]}})
    before = copy.deepcopy(event)
    data = transform(event).rows[0].data
    assert str(data["id"]).startswith("auto-")
    assert event == before


# ---- merge rules (§5.1) ----


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        pytest.param(
            envelope(
                "merge",
                mergeProperties=[
                    {"type": "email", "value": "a@x"},
                    {"type": "user_id", "value": 9},
                ],
            ),
            MergeRule("email", "a@x", "user_id", "9"),
            id="merge",
        ),
        pytest.param(
            envelope("alias", previousId="old"),
            MergeRule("user_id", "user-1", "user_id", "old"),
            id="alias",
        ),
        pytest.param(envelope("alias", userId="", previousId="old"), None, id="alias-blank-user"),
        pytest.param(
            envelope("alias", previousId=""),
            MergeRule("user_id", "user-1", None, None),
            id="alias-blank-previous",
        ),
        pytest.param(envelope("identify"), ANON_USER, id="anonymous-and-user"),
        pytest.param(
            envelope("identify", anonymousId=""),
            MergeRule("user_id", "user-1", None, None),
            id="blank-anonymous-id",
        ),
        pytest.param(
            envelope("page", userId=None),
            MergeRule("anonymous_id", "anon-1", None, None),
            id="blank-second-property",
        ),
        pytest.param(envelope("screen", anonymousId=None, userId=""), None, id="nothing"),
        pytest.param(
            envelope("group", groupId="g", anonymousId=42, userId=7.0),
            MergeRule("anonymous_id", "42", "user_id", "7"),
            id="numbers-as-json-text",
        ),
        pytest.param(
            envelope("page", userId={"id": 456}),
            MergeRule("anonymous_id", "anon-1", "user_id", '{"id":456}'),
            id="object-as-json",
        ),
        pytest.param(
            envelope("identify", anonymousId=" "),
            MergeRule("anonymous_id", " ", "user_id", "user-1"),
            id="space-is-not-blank",
        ),
        pytest.param(envelope("track", event="Signed Up"), ANON_USER, id="track"),
        pytest.param(envelope("track", event="$$$"), None, id="track-without-event-table"),
    ],
)
def test_merge_rules(event: Event, expected: MergeRule | None) -> None:
    """§5.1 table, blank rules and the gateway's stringify (a string as is, else JSON)."""
    assert transform(event).merge_rule == expected


# ---- JSON paths (§2.1) ----


def test_json_paths_store_json_columns() -> None:
    """§2.1 jsonPaths from integrations.DATA_WAREHOUSE: prefixed and legacy (track-only) paths."""
    event = envelope(
        "track",
        event="E",
        integrations={
            "DATA_WAREHOUSE": {"options": {"jsonPaths": ["track.properties.variant", "cart.items"]}}
        },
        properties={
            "variant": {"color": "blue", "size": 42},
            "cart": {"items": [1, 2], "total": 3},
            "other": {"x": 1},
            "blank": None,
        },
    )
    data = event_row(event)
    assert (data.data["variant"], data.types["variant"]) == ('{"color":"blue","size":42}', "json")
    assert (data.data["cart_items"], data.types["cart_items"]) == ("[1,2]", "json")
    assert (data.data["cart_total"], data.data["other_x"]) == (3, 1)


def test_json_paths_for_other_calls_need_the_call_prefix() -> None:
    """A legacy path applies to track only; identify.traits.address matches identify traits."""
    paths = ["identify.traits.address", "tags"]
    event = envelope(
        "identify",
        integrations={"POSTGRES": {"options": {"jsonPaths": paths}}},
        traits={"address": {"city": "Paris"}, "tags": {"a": 1}},
    )
    data = only_row(event)
    assert (data.data["address"], data.types["address"]) == ('{"city":"Paris"}', "json")
    assert data.data["tags_a"] == 1


# ---- column cap (§1.3) ----


def test_column_cap_counts_uuid_ts() -> None:
    """§1.3: WH_MAX_COLUMNS_IN_EVENT = 1600 of the Go port, uuid_ts included."""
    base = len(only_row(envelope("identify")).data) + 1
    fits = {f"t{i}": i for i in range(MAX_COLUMNS - base)}
    assert len(only_row(envelope("identify", traits=fits)).data) + 1 == MAX_COLUMNS
    too_many = {**fits, "one_more": 1}
    with pytest.raises(TooManyColumns, match="Too many columns outputted from the event") as info:
        transform(envelope("identify", traits=too_many))
    assert info.value.count == MAX_COLUMNS + 1
    assert info.value.message_id == "msg-1"
    assert "msg-1" in str(info.value)
    assert str(MAX_COLUMNS + 1) in str(info.value)


def test_column_cap_applies_to_the_event_table() -> None:
    properties = {f"p{i}": i for i in range(MAX_COLUMNS)}
    with pytest.raises(TooManyColumns):
        transform(envelope("track", event="E", properties=properties))


def test_column_cap_skips_rudder_sources() -> None:
    """§1.3: rows whose channel is "sources" are exempt."""
    traits = {f"t{i}": i for i in range(MAX_COLUMNS)}
    assert len(only_row(envelope("identify", channel="sources", traits=traits)).data) > MAX_COLUMNS


def test_unknown_type_is_refused() -> None:
    """§1.2 "Unknown event type"; spec.validate never lets one through."""
    with pytest.raises(ValueError, match="Unknown event type"):
        transform(envelope("extract"))


# ---- robustness and caches ----

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["2020-02-31", "2020-01-01 10:20+05", "0005-03-04 10:00", "$$$", "1"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children)
    ),
    max_leaves=25,
)
PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (float,),
    "boolean": (bool,),
    "datetime": (str,),
    "string": (str,),
    "json": (str,),
}


@given(
    properties=st.dictionaries(st.text(max_size=8), JSON, max_size=8),
    context=st.dictionaries(st.text(max_size=8), JSON, max_size=6),
    call=st.sampled_from(["track", "identify", "page", "screen", "group", "alias"]),
)
def test_any_json_gives_well_formed_rows(
    properties: dict[str, Any], context: dict[str, Any], call: str
) -> None:
    """Whatever the client nests, every column is a valid name with a type matching its value."""
    event = envelope(
        call,
        event="E",
        groupId="g",
        previousId="p",
        properties=properties,
        traits=properties,
        userProperties=properties,
        context=context,
    )
    for result in transform(event).rows:
        assert result.data.keys() == result.types.keys()
        for column, value in result.data.items():
            assert column
            assert len(column) <= 64
            assert column == column.lower()
            kind = result.types[column]
            assert isinstance(value, PYTHON_TYPES[kind])
            assert kind != "int" or (type(value) is int and -(2**63) <= value < 2**63)
            assert kind != "datetime" or (len(str(value)) == 24 and str(value).endswith("Z"))


def test_column_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random keys cannot grow the name cache without bound; results do not change."""
    monkeypatch.setattr(flatten, "_CACHE_LIMIT", 10)
    properties = {f"key{i}": {f"nested{i}": i} for i in range(30)}
    expected = {f"key{i}_nested{i}": i for i in range(30)}
    for _ in range(2):
        data = event_row(envelope("track", event="E", properties=properties)).data
        assert {c: data[c] for c in expected} == expected
        assert sum(len(columns) for columns in flatten._COLUMNS["track"].values()) <= 10
