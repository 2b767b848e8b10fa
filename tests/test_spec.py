"""loader/spec.py: the rejection rules of spec/http-api.md and the identifier rule of §7."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from loader.errors import InvalidEvent, InvalidJSON, RequestRejected, RequestTooLarge
from loader.settings import MAX_EVENT_BYTES
from loader.spec import Payload, identifier, parse_request, sanitize_unicode, validate
from loader.types import CallType

ID = {"anonymousId": "anon-1"}


def _body(value: Any) -> bytes:
    return orjson.dumps(value)


def _batch(*events: Any, **top: Any) -> bytes:
    return orjson.dumps({"batch": list(events), **top})


def _track(**fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Clicked", **ID, **fields}


def _sized(size: int, **fields: Any) -> dict[str, Any]:
    """A track event whose orjson encoding is exactly `size` bytes."""
    event = _track(pad="", **fields)
    event["pad"] = "x" * (size - len(orjson.dumps(event)))
    assert len(orjson.dumps(event)) == size
    return event


def _reject(body: bytes, call_type: CallType | None) -> str:
    with pytest.raises(RequestRejected) as info:
        parse_request(body, call_type)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- http-api.md error table, one row per situation, at the parse_request level -------------

ERROR_TABLE = [
    # Invalid JSON
    pytest.param(b"", "track", InvalidJSON, "Invalid JSON: ", id="json-empty-single"),
    pytest.param(b"", None, InvalidJSON, "Invalid JSON: ", id="json-empty-batch"),
    pytest.param(b" \n\t ", None, InvalidJSON, "Invalid JSON: ", id="json-whitespace"),
    pytest.param(b'{"batch": [', None, InvalidJSON, "Invalid JSON: ", id="json-truncated"),
    pytest.param(b'{"userId": 1} x', "track", InvalidJSON, "Invalid JSON: ", id="json-trailing"),
    # Invalid event
    pytest.param(_body([{**ID}]), "identify", InvalidEvent, "Invalid event: ", id="single-array"),
    pytest.param(b"123", "identify", InvalidEvent, "Invalid event: ", id="single-number"),
    pytest.param(b'"x"', "page", InvalidEvent, "Invalid event: ", id="single-string"),
    pytest.param(b"null", "screen", InvalidEvent, "Invalid event: ", id="single-null"),
    pytest.param(_body([_track()]), None, InvalidEvent, "Invalid event: ", id="batch-body-array"),
    pytest.param(b"7", None, InvalidEvent, "Invalid event: ", id="batch-body-number"),
    pytest.param(
        _batch(_track(), _track(), [1]),
        None,
        InvalidEvent,
        "Invalid event at batch index 2: ",
        id="batch-element-array",
    ),
    pytest.param(
        _batch("x"), None, InvalidEvent, "Invalid event at batch index 0: ", id="batch-element-str"
    ),
    pytest.param(
        _batch(None), None, InvalidEvent, "Invalid event at batch index 0: ", id="batch-elem-null"
    ),
    # Empty batch payload
    pytest.param(_body({}), None, InvalidEvent, "Empty batch payload: ", id="batch-missing"),
    pytest.param(_batch(), None, InvalidEvent, "Empty batch payload: ", id="batch-empty"),
    pytest.param(
        _body({"batch": None}), None, InvalidEvent, "Empty batch payload: ", id="batch-null"
    ),
    # Invalid event type
    pytest.param(
        _batch({**ID, "event": "x"}),
        None,
        InvalidEvent,
        "Invalid event type at batch index 0: `type` is missing",
        id="type-missing",
    ),
    pytest.param(
        _batch(_track(), {**ID, "type": "purchase"}),
        None,
        InvalidEvent,
        'Invalid event type at batch index 1: `type` is "purchase"',
        id="type-unknown",
    ),
    pytest.param(
        _batch({**ID, "type": 3}),
        None,
        InvalidEvent,
        "Invalid event type at batch index 0: `type` is 3",
        id="type-number",
    ),
    pytest.param(
        _batch({**ID, "type": None}),
        None,
        InvalidEvent,
        "Invalid event type at batch index 0: `type` is null",
        id="type-null",
    ),
    pytest.param(
        _batch({**ID, "type": ["track"]}),
        None,
        InvalidEvent,
        'Invalid event type at batch index 0: `type` is ["track"]',
        id="type-list",
    ),
    pytest.param(
        _batch({**ID, "type": "extract"}),
        None,
        InvalidEvent,
        'Invalid event type at batch index 0: `type` is "extract"',
        id="type-extract",
    ),
    # Request neither has anonymousId nor userId
    pytest.param(
        _body({}),
        "identify",
        InvalidEvent,
        "Request neither has anonymousId nor userId: ",
        id="no-id-single",
    ),
    pytest.param(
        _body({"userId": None, "anonymousId": " \u200b"}),
        "merge",
        InvalidEvent,
        "Request neither has anonymousId nor userId: ",
        id="no-id-merge",
    ),
    pytest.param(
        _batch(_track(), {"type": "page", "userId": ""}),
        None,
        InvalidEvent,
        "Request neither has anonymousId nor userId at batch index 1: ",
        id="no-id-batch",
    ),
    # Missing required field
    pytest.param(
        _body(ID),
        "track",
        InvalidEvent,
        "Missing required field: `event`",
        id="track-event-single",
    ),
    pytest.param(
        _batch(_track(), {**ID, "type": "track", "event": " "}),
        None,
        InvalidEvent,
        "Missing required field at batch index 1: `event`",
        id="track-event-batch",
    ),
    pytest.param(
        _body(ID), "group", InvalidEvent, "Missing required field: `groupId`", id="group-single"
    ),
    pytest.param(
        _batch({**ID, "type": "group", "groupId": ""}),
        None,
        InvalidEvent,
        "Missing required field at batch index 0: `groupId`",
        id="group-batch",
    ),
    pytest.param(
        _body(ID), "alias", InvalidEvent, "Missing required field: `previousId`", id="alias-single"
    ),
    pytest.param(
        _batch({**ID, "type": "alias"}),
        None,
        InvalidEvent,
        "Missing required field at batch index 0: `previousId`",
        id="alias-batch",
    ),
    pytest.param(
        _body(ID),
        "merge",
        InvalidEvent,
        "Missing required field: `mergeProperties`",
        id="merge-single",
    ),
    pytest.param(
        _batch({**ID, "type": "merge", "mergeProperties": []}),
        None,
        InvalidEvent,
        "Missing required field at batch index 0: `mergeProperties`",
        id="merge-batch",
    ),
    # Request size too large (one event over 32 KB; the 4 MB body limit is the server's)
    pytest.param(
        _body(_sized(MAX_EVENT_BYTES + 1)),
        "track",
        RequestTooLarge,
        f"Request size too large: the event is {MAX_EVENT_BYTES + 1} bytes",
        id="size-single",
    ),
    pytest.param(
        _batch(_track(), _sized(MAX_EVENT_BYTES + 1)),
        None,
        RequestTooLarge,
        f"Request size too large: the event at batch index 1 is {MAX_EVENT_BYTES + 1} bytes",
        id="size-batch",
    ),
]


@pytest.mark.parametrize(("body", "call_type", "error", "start"), ERROR_TABLE)
def test_parse_request_error_table(
    body: bytes, call_type: CallType | None, error: type[Exception], start: str
) -> None:
    """http-api.md error table: each situation raises its error with the table's phrase first."""
    with pytest.raises(error) as info:
        parse_request(body, call_type)
    message = str(info.value)
    assert message.startswith(start), message
    assert "\n" not in message


def test_invalid_event_keeps_phrase_and_index() -> None:
    """http-api.md error table: the phrase and the batch index stay available to callers."""
    with pytest.raises(InvalidEvent) as info:
        parse_request(_batch(_track(), _track(), {"type": "identify"}), None)
    assert (info.value.phrase, info.value.index) == (
        "Request neither has anonymousId nor userId",
        2,
    )


# --- Invalid JSON variants (http-api.md error table, "Invalid JSON") --------------------------

INVALID_JSON = [
    pytest.param(b"", id="empty"),
    pytest.param(b"   \r\n", id="whitespace-only"),
    pytest.param(b'{"userId": "u1"', id="truncated-object"),
    pytest.param(b'{"userId": "u', id="truncated-string"),
    pytest.param(b'{"userId": "u1"} {}', id="trailing-document"),
    pytest.param(b'{"userId": "u1"}x', id="trailing-garbage"),
    pytest.param(b'{"userId": "u1",}', id="trailing-comma"),
    pytest.param(b"{'userId': 'u1'}", id="single-quotes"),
    pytest.param(b'{"userId": "\xff"}', id="bad-utf8-byte"),
    pytest.param(b'{"userId": "\xc3"}', id="bad-utf8-truncated-sequence"),
    pytest.param(b'{"userId": "\xed\xa0\x80"}', id="utf8-encoded-surrogate"),
    pytest.param(b'{"userId": NaN}', id="nan"),
    pytest.param(b'{"userId": Infinity}', id="infinity"),
    pytest.param(b'{"userId": -Infinity}', id="minus-infinity"),
    pytest.param(b'{"userId": 1e400}', id="number-overflows-double"),
    pytest.param(b'{"userId": "\\ud800"}', id="lone-high-surrogate"),
    pytest.param(b'{"userId": "\\udc00"}', id="lone-low-surrogate"),
    pytest.param(b'{"userId": "\\x41"}', id="bad-escape"),
    pytest.param(b'{"userId": "a\x01b"}', id="raw-control-char"),
    pytest.param(b"\xef\xbb\xbf{}", id="utf8-bom"),
    pytest.param(b"[" * 2000 + b"]" * 2000, id="nesting-too-deep"),
    pytest.param(b"\x1f\x8b\x08\x00", id="gzip-bytes-not-decoded"),
]


@pytest.mark.parametrize("body", INVALID_JSON)
@pytest.mark.parametrize("call_type", ["identify", None])
def test_parse_request_invalid_json(body: bytes, call_type: CallType | None) -> None:
    """http-api.md error table: anything orjson refuses is `Invalid JSON: <orjson's reason>`."""
    with pytest.raises(InvalidJSON) as info:
        parse_request(body, call_type)
    message = str(info.value)
    assert message.startswith("Invalid JSON: ")
    assert len(message) > len("Invalid JSON: ")


def test_parse_request_integer_beyond_64_bits_becomes_float() -> None:
    """http-api.md body handling: orjson reads an integer beyond 64 bits as a float (as Go's
    float64 does), so it is accepted, never a crash; integers within 64 bits stay exact."""
    body = b'{"userId": 100000000000000000000000, "anonymousId": 18446744073709551615}'
    (event,) = parse_request(body, "identify").events
    assert event["userId"] == 1e23
    assert event["anonymousId"] == 2**64 - 1


# --- Ordering: first bad element wins, all-or-nothing (http-api.md responses) ---------------


def test_batch_first_bad_element_wins() -> None:
    """http-api.md responses: a batch is checked in order; the first bad element is reported."""
    body = _batch(_track(), {"type": "track", "event": "x"}, "not-an-object", {"type": "nope"})
    message = _reject(body, None)
    assert message.startswith("Request neither has anonymousId nor userId at batch index 1")


def test_batch_is_all_or_nothing() -> None:
    """http-api.md responses: one bad event rejects the whole batch; nothing is returned."""
    good = [_track(messageId=str(i)) for i in range(5)]
    with pytest.raises(InvalidEvent) as info:
        parse_request(_batch(*good, {**ID, "type": "track"}), None)
    assert info.value.index == 5


RULE_ORDER = [
    pytest.param({"type": "bogus"}, "Invalid event type", id="type-before-identifier"),
    pytest.param({"type": "track"}, "Request neither", id="identifier-before-required"),
    pytest.param(
        {**ID, "type": "track", "pad": "x" * MAX_EVENT_BYTES},
        "Missing required field",
        id="required-before-size",
    ),
]


@pytest.mark.parametrize(("event", "start"), RULE_ORDER)
def test_rules_apply_in_table_order(event: dict[str, Any], start: str) -> None:
    """http-api.md error table: object, type, identifier, required field, then size."""
    assert _reject(_batch(event), None).startswith(start)


# --- The identifier rule (rudder-gateway.md §7) ------------------------------------------------

PRESENT_IDS = [
    pytest.param("u1", id="string"),
    pytest.param(" u1 ", id="padded-string"),
    pytest.param("é", id="non-ascii"),
    pytest.param(123, id="number"),
    pytest.param(0, id="zero"),
    pytest.param(0.0, id="float-zero"),
    pytest.param(-1.5, id="negative-float"),
    pytest.param(False, id="false"),
    pytest.param(True, id="true"),
    pytest.param({"id": 456}, id="object"),
    pytest.param({}, id="empty-object"),
    pytest.param([], id="empty-list"),
    pytest.param("\u200bu\u200b", id="letter-between-zero-widths"),
]

ABSENT_IDS = [
    pytest.param(None, id="null"),
    pytest.param("", id="empty"),
    pytest.param("   ", id="spaces"),
    pytest.param("\t\t", id="tabs"),
    pytest.param("\n\r", id="newlines"),
    pytest.param("\u200b", id="zero-width-space"),
    pytest.param("\u00a0", id="nbsp"),
    pytest.param("\ufeff", id="bom"),
    pytest.param("\u2003\u2009\u200a", id="unicode-spaces"),
    pytest.param("\u3164\u115f\u2800", id="fillers-and-braille-blank"),
    pytest.param("\u0000\u00ad\u2060", id="nul-soft-hyphen-word-joiner"),
    pytest.param(" \u200b\t\u00a0 \u200d ", id="mixed"),
]


@pytest.mark.parametrize("value", PRESENT_IDS)
@pytest.mark.parametrize("field", ["userId", "anonymousId"])
def test_identifier_present(field: str, value: Any) -> None:
    """rudder-gateway.md §7: numbers, 0, false and objects count as present (JSON text)."""
    (event,) = parse_request(_body({field: value}), "identify").events
    assert event[field] == value  # kept as sent: numbers stay numbers, strings untrimmed


@pytest.mark.parametrize("value", ABSENT_IDS)
def test_identifier_absent(value: Any) -> None:
    """rudder-gateway.md §7: null and blank or invisible-only strings count as absent."""
    body = _body({"userId": value, "anonymousId": value})
    assert _reject(body, "identify").startswith("Request neither has anonymousId nor userId")


def test_identifier_one_of_two_is_enough() -> None:
    """rudder-gateway.md §7: the rule fails only when both are empty."""
    events = parse_request(
        _batch(
            {"type": "identify", "userId": "u1", "anonymousId": " "},
            {"type": "identify", "userId": "\u200b", "anonymousId": "a1"},
        ),
        None,
    ).events
    assert [e["userId"] for e in events] == ["u1", "\u200b"]


IDENTIFIER_VALUES = [
    pytest.param(None, "", id="null"),
    pytest.param("abc", "abc", id="string"),
    pytest.param("  abc \u200b", "abc", id="trimmed"),
    pytest.param("\u0000 -a-random-string \u00a0\t", "-a-random-string", id="gateway-test"),
    pytest.param(123, "123", id="int"),
    pytest.param(0, "0", id="zero"),
    pytest.param(1.0, "1", id="integral-float-as-go"),
    pytest.param(1.5, "1.5", id="float"),
    pytest.param(1e21, "1e+21", id="float-exponent"),
    pytest.param(1e-7, "1e-7", id="small-float-go-exponent"),
    pytest.param(0.000001, "0.000001", id="small-float-fixed"),
    pytest.param(2**60, "1152921504606847000", id="int-beyond-float64"),
    pytest.param(False, "false", id="false"),
    pytest.param({"b": 1, "a": "x"}, '{"a":"x","b":1}', id="object-sorted-keys"),
    pytest.param([1, "x"], '[1,"x"]', id="list"),
]


@pytest.mark.parametrize(("value", "expected"), IDENTIFIER_VALUES)
def test_identifier_stringifies_like_go(value: Any, expected: str) -> None:
    """rudder-gateway.md §7: stringify.Any (Go json.Marshal), sanitize.Unicode, TrimSpace."""
    assert identifier(value) == expected


SANITIZE = [
    pytest.param("\u0000 Test \u0000foo_bar-baz 123-222 \u0000", " Test foo_bar-baz 123-222 "),
    pytest.param("\u0000", ""),
    pytest.param("\u0000 ", " "),
    pytest.param("\u0000 \u0000", " "),
    pytest.param("\u00a0\t\n\r\u034f", ""),
    pytest.param("τυχαίο;", "τυχαίο;"),
    pytest.param("a\u2800b\u3164c\uffa0d\u17b4e", "abcde"),
    pytest.param("emoji 😀 kept", "emoji 😀 kept"),
    pytest.param("\ue000private", "private"),
]


@pytest.mark.parametrize(("raw", "clean"), SANITIZE)
def test_sanitize_unicode(raw: str, clean: str) -> None:
    """rudder-gateway.md §7: rudder-go-kit sanitize.Unicode's own test table, plus a few."""
    assert sanitize_unicode(raw) == clean


@pytest.mark.parametrize(
    "rune",
    [
        *(0x0000, 0x0009, 0x00A0, 0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5),
        *(0x180E, *range(0x2000, 0x2010), 0x202F, 0x205F, *range(0x2060, 0x2065)),
        *(*range(0x206A, 0x2070), 0x3000, 0x2800, 0x3164, 0xFEFF, 0xFFA0),
    ],
)
def test_sanitize_unicode_drops_every_invisible_rune(rune: int) -> None:
    """rudder-gateway.md §7: every rune of the invisible list is removed."""
    assert sanitize_unicode(f"a{chr(rune)}b") == "ab"


# --- Required fields (http-api.md error table, "Missing required field") ---------------------

REQUIRED = [
    # track: a non-blank string `event`
    pytest.param("track", {"event": "Order Completed"}, None, id="track-ok"),
    pytest.param("track", {"event": " x "}, None, id="track-padded-ok"),
    pytest.param("track", {}, "`event`", id="track-missing"),
    pytest.param("track", {"event": None}, "`event`", id="track-null"),
    pytest.param("track", {"event": ""}, "`event`", id="track-empty"),
    pytest.param("track", {"event": " \t"}, "`event`", id="track-blank"),
    pytest.param("track", {"event": "\u200b\u00a0"}, "`event`", id="track-invisible"),
    pytest.param("track", {"event": 5}, "`event`", id="track-number"),
    pytest.param("track", {"event": {"name": "x"}}, "`event`", id="track-object"),
    # group: a non-blank groupId, string or number
    pytest.param("group", {"groupId": "g1"}, None, id="group-ok"),
    pytest.param("group", {"groupId": 0}, None, id="group-zero"),
    pytest.param("group", {"groupId": 12.5}, None, id="group-float"),
    pytest.param("group", {}, "`groupId`", id="group-missing"),
    pytest.param("group", {"groupId": None}, "`groupId`", id="group-null"),
    pytest.param("group", {"groupId": "  "}, "`groupId`", id="group-blank"),
    pytest.param("group", {"groupId": True}, "`groupId`", id="group-bool"),
    pytest.param("group", {"groupId": {"id": 1}}, "`groupId`", id="group-object"),
    # alias: a non-blank previousId
    pytest.param("alias", {"previousId": "old"}, None, id="alias-ok"),
    pytest.param("alias", {"previousId": 42}, None, id="alias-number"),
    pytest.param("alias", {}, "`previousId`", id="alias-missing"),
    pytest.param("alias", {"previousId": ""}, "`previousId`", id="alias-empty"),
    pytest.param("alias", {"previousId": "\ufeff"}, "`previousId`", id="alias-invisible"),
    pytest.param("alias", {"previousId": False}, "`previousId`", id="alias-bool"),
    # page, screen and identify need nothing more
    pytest.param("page", {}, None, id="page-without-name"),
    pytest.param("screen", {}, None, id="screen-without-name"),
    pytest.param("identify", {}, None, id="identify-bare"),
]


@pytest.mark.parametrize(("call", "fields", "missing"), REQUIRED)
def test_required_fields(call: CallType, fields: dict[str, Any], missing: str | None) -> None:
    """http-api.md error table: track/event, group/groupId, alias/previousId; page needs none."""
    body = _body({**ID, **fields})
    if missing is None:
        (event,) = parse_request(body, call).events
        assert event["type"] == call
        return
    message = _reject(body, call)
    assert message.startswith(f"Missing required field: {missing}")


PAIR = {"type": "email", "value": "a@example.com"}

MERGE = [
    pytest.param([PAIR, {"type": "user_id", "value": "u1"}], None, id="ok"),
    pytest.param([PAIR, {"type": "phone", "value": 5550100}], None, id="number-value-ok"),
    pytest.param([PAIR, {"type": "x", "value": "y", "extra": 1}], None, id="extra-keys-ok"),
    pytest.param(None, "`mergeProperties` must be a list of exactly two", id="null"),
    pytest.param({"a": PAIR}, "`mergeProperties` must be a list of exactly two", id="object"),
    pytest.param("x", "`mergeProperties` must be a list of exactly two", id="string"),
    pytest.param([], "`mergeProperties` must be a list of exactly two", id="empty"),
    pytest.param([PAIR], "`mergeProperties` must be a list of exactly two", id="one"),
    pytest.param([PAIR] * 3, "`mergeProperties` must be a list of exactly two", id="three"),
    pytest.param([PAIR, "email"], "`mergeProperties[1]` must be a {type, value}", id="scalar"),
    pytest.param([None, PAIR], "`mergeProperties[0]` must be a {type, value}", id="null-item"),
    pytest.param([PAIR, {"value": "v"}], "`mergeProperties[1].type`", id="type-missing"),
    pytest.param([{"type": "", "value": "v"}, PAIR], "`mergeProperties[0].type`", id="type-empty"),
    pytest.param([PAIR, {"type": "email"}], "`mergeProperties[1].value`", id="value-missing"),
    pytest.param(
        [PAIR, {"type": "email", "value": None}], "`mergeProperties[1].value`", id="value-null"
    ),
    pytest.param(
        [PAIR, {"type": "email", "value": " \u200b"}],
        "`mergeProperties[1].value`",
        id="value-blank",
    ),
]


@pytest.mark.parametrize(("props", "problem"), MERGE)
def test_merge_properties(props: Any, problem: str | None) -> None:
    """http-api.md error table: merge needs exactly two {type, value} objects, non-blank."""
    body = _body({**ID, "mergeProperties": props})
    if problem is None:
        (event,) = parse_request(body, "merge").events
        assert event["mergeProperties"] == props
        return
    assert _reject(body, "merge").startswith(f"Missing required field: {problem}")


def test_merge_properties_missing_key() -> None:
    """http-api.md error table: a merge without mergeProperties names the field as missing."""
    message = _reject(_body(ID), "merge")
    assert message == (
        "Missing required field: `mergeProperties` must be a list of exactly two "
        "{type, value} objects, got missing"
    )


# --- Types, single calls, batch shapes (http-api.md endpoints; rudder-gateway.md §6) ----------


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        pytest.param("track", "track", id="lower"),
        pytest.param("TRACK", "track", id="upper"),
        pytest.param("Identify", "identify", id="title"),
        pytest.param("pAgE", "page", id="mixed"),
        pytest.param("MERGE", "merge", id="merge"),
    ],
)
def test_batch_type_is_case_insensitive(sent: str, stored: str) -> None:
    """http-api.md endpoints: a batch event's type matches case-insensitively, stored lower."""
    event = {
        **ID,
        "type": sent,
        "event": "e",
        "mergeProperties": [PAIR, PAIR],
    }
    (parsed,) = parse_request(_batch(event), None).events
    assert parsed["type"] == stored


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(" track", id="leading-space"),
        pytest.param("tracks", id="plural"),
        pytest.param("trac\u212a", id="kelvin-sign-lowers-to-k"),
        pytest.param("", id="empty"),
        pytest.param(True, id="bool"),
        pytest.param({"t": 1}, id="object"),
    ],
)
def test_batch_type_rejected(sent: Any) -> None:
    """http-api.md error table: anything but the seven names (any case) is an invalid type."""
    assert _reject(_batch({**ID, "event": "e", "type": sent}), None).startswith(
        "Invalid event type at batch index 0: `type` is "
    )


def test_invalid_type_detail_is_short_and_one_line() -> None:
    """http-api.md responses: a one-line message; a long bad value is cut short."""
    message = _reject(_batch({**ID, "type": "a\nb" + "x" * 500}), None)
    assert len(message) < 200
    assert message.endswith("use one of identify, track, page, screen, group, alias, merge")


@pytest.mark.parametrize(
    "call_type", ["identify", "track", "page", "screen", "group", "alias", "merge"]
)
def test_single_call_path_sets_type(call_type: CallType) -> None:
    """http-api.md endpoints: the path sets (overwrites) `type`, whatever the body says."""
    body = {
        **ID,
        "type": "bogus",
        "event": "e",
        "groupId": "g",
        "previousId": "p",
        "mergeProperties": [PAIR, PAIR],
    }
    payload = parse_request(_body(body), call_type)
    assert payload == Payload([{**body, "type": call_type}], None)


def test_single_call_batch_key_is_a_property() -> None:
    """rudder-gateway.md §6: a `batch` key in a single call is an ordinary property."""
    (event,) = parse_request(_body({**ID, "batch": []}), "identify").events
    assert event["batch"] == []


def test_batch_as_object_is_one_event() -> None:
    """rudder-gateway.md §6 (gjson): `"batch": {...}` is a one-element batch."""
    payload = parse_request(_body({"batch": _track()}), None)
    assert payload.events == [_track()]


@pytest.mark.parametrize(
    "batch",
    [
        pytest.param("x", id="string"),
        pytest.param(5, id="number"),
        pytest.param(0, id="zero"),
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param("", id="empty-string"),
    ],
)
def test_batch_as_scalar_is_invalid_event(batch: Any) -> None:
    """rudder-gateway.md §6: a scalar `batch` is one element that is not an object."""
    message = _reject(_body({"batch": batch}), None)
    assert message.startswith("Invalid event at batch index 0: ")


@pytest.mark.parametrize(
    ("top", "sent_at"),
    [
        pytest.param({"sentAt": "2020-02-02T00:23:09.544Z"}, "2020-02-02T00:23:09.544Z", id="str"),
        pytest.param({"sentAt": 1580602989}, None, id="number-ignored"),
        pytest.param({"sentAt": None}, None, id="null"),
        pytest.param({}, None, id="absent"),
    ],
)
def test_batch_sent_at_is_returned(top: dict[str, Any], sent_at: str | None) -> None:
    """http-api.md body handling: the batch-level sentAt is handed on when it is a string."""
    assert parse_request(_batch(_track(), **top), None).sent_at == sent_at


def test_single_call_has_no_batch_sent_at() -> None:
    """http-api.md body handling: a single call's own sentAt stays in its event."""
    payload = parse_request(_body({**ID, "sentAt": "2020-02-02T00:23:09.544Z"}), "page")
    assert payload.sent_at is None
    assert payload.events[0]["sentAt"] == "2020-02-02T00:23:09.544Z"


def test_batch_level_fields_are_ignored() -> None:
    """http-api.md body handling: batch-level context/integrations/writeKey are not merged."""
    body = _batch(_track(), context={"ip": "1.2.3.4"}, integrations={"All": False}, writeKey="k")
    assert parse_request(body, None).events == [_track()]


def test_numeric_ids_stay_numbers() -> None:
    """http-api.md body handling: a numeric userId/anonymousId stays a number in the event."""
    (event,) = parse_request(b'{"userId": 123, "anonymousId": 4.5}', "identify").events
    assert event["userId"] == 123 and isinstance(event["userId"], int)
    assert event["anonymousId"] == 4.5


# --- Per-event 32 KB limit (http-api.md error table, "Request size too large") ---------------


@pytest.mark.parametrize("call_type", ["track", None])
def test_event_exactly_at_limit_is_accepted(call_type: CallType | None) -> None:
    """http-api.md error table: an event of exactly 32 KB of JSON is accepted."""
    event = _sized(MAX_EVENT_BYTES)
    body = _body(event) if call_type else _batch(_track(), event)
    assert parse_request(body, call_type).events[-1] == event


@pytest.mark.parametrize("call_type", ["track", None])
def test_event_one_byte_over_limit_is_rejected(call_type: CallType | None) -> None:
    """http-api.md error table: one byte over 32 KB is `Request size too large`."""
    event = _sized(MAX_EVENT_BYTES + 1)
    body = _body(event) if call_type else _batch(_track(), event)
    with pytest.raises(RequestTooLarge) as info:
        parse_request(body, call_type)
    where = "the event" if call_type else "the event at batch index 1"
    assert str(info.value) == (
        f"Request size too large: {where} is {MAX_EVENT_BYTES + 1} bytes as JSON; "
        f"the limit is {MAX_EVENT_BYTES} bytes per event"
    )


def test_event_size_is_measured_compact() -> None:
    """http-api.md error table: the event's JSON size, not its share of the body's whitespace."""
    event = _sized(MAX_EVENT_BYTES)
    pretty = orjson.dumps(event, option=orjson.OPT_INDENT_2)
    assert len(pretty) > MAX_EVENT_BYTES
    body = b'{"batch": [\n' + pretty + b"\n]}"
    assert parse_request(body, None).events == [event]


def test_batch_of_small_events_may_exceed_32_kb() -> None:
    """http-api.md error table: the 32 KB limit is per event, not per batch."""
    events = [_sized(1000) for _ in range(100)]
    assert len(parse_request(_batch(*events), None).events) == 100


# --- validate() alone (file imports: each line is one event with its own type) --------------


def test_validate_uses_the_line_index() -> None:
    """http-api.md error table via validate(): the index given is the one reported."""
    with pytest.raises(InvalidEvent) as info:
        validate({"type": "track", "userId": "u"}, 7)
    assert str(info.value).startswith("Missing required field at batch index 7: `event`")


def test_validate_returns_the_same_dict_lowercased() -> None:
    """http-api.md endpoints via validate(): the event itself comes back, type lower-cased."""
    raw = {"type": "Track", "userId": "u", "event": "e"}
    assert validate(raw, 0) is raw
    assert raw["type"] == "track"


def test_validate_rejects_non_object() -> None:
    """http-api.md error table via validate(): a line that is not an object."""
    with pytest.raises(InvalidEvent) as info:
        validate([1, 2], 3)
    assert (
        str(info.value)
        == "Invalid event at batch index 3: an event must be a JSON object, got [1,2]"
    )
