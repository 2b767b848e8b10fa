"""loader.schema against spec/warehouse.md §3: inference, valid timestamps, coercion, discards.

Expected timestamps were produced by V8 (node 20, TZ=UTC) running T util.js validTimestamp.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from loader.schema import (
    ArrayText,
    coerce,
    discard_text,
    go_text,
    infer,
    js_number_text,
    merge_type,
    valid_timestamp,
)
from loader.types import ColumnType

# §3.1 "Observed under V8 with TZ=UTC": every row of the table.
SPEC_3_1_TABLE = [
    pytest.param("2020-01-01", "2020-01-01T00:00:00.000Z", id="date-only"),
    pytest.param("2020-01-01 10:20:30", "2020-01-01T10:20:30.000Z", id="space-naive-is-utc"),
    pytest.param("2020-01-01T10:20", "2020-01-01T10:20:00.000Z", id="no-seconds"),
    pytest.param("2020-01-01T10:20:30.123456Z", "2020-01-01T10:20:30.123Z", id="micro-cut-to-ms"),
    pytest.param("2020-01-01T10:20:30+05:30", "2020-01-01T04:50:30.000Z", id="offset-colon"),
    pytest.param("2020-01-01T10:20:30+0530", "2020-01-01T04:50:30.000Z", id="offset-no-colon"),
    pytest.param("2020-02-31", "2020-03-02T00:00:00.000Z", id="feb-31-rolls-over"),
    pytest.param("2020-01-01 ", "2020-01-01T00:00:00.000Z", id="trailing-space"),
    pytest.param("2020-01-01T10:20:30+05", None, id="offset-hours-only"),
    pytest.param("2020-01-01T10", None, id="hour-only"),
    pytest.param("20200101", None, id="basic-format"),
    pytest.param("2020-1-1", None, id="single-digit-month-day"),
    pytest.param("2020-13-01", None, id="month-13"),
    pytest.param("2020-01-01T24:00:00", None, id="hour-24"),
    pytest.param("2020-01-01T23:59:60", None, id="second-60"),
    pytest.param("05:23:59Z", None, id="time-only"),
    pytest.param("2006-01-02T15:04:05.000Z07:00", None, id="go-layout"),
    pytest.param("+2023-06-14T05:23:59.244Z", None, id="plus-year"),
    pytest.param("-2023-06-14T05:23:59.244Z", None, id="minus-year"),
]

# Range, the Go port's 40-byte cap, and V8 parser corners (§3.1 "JS Date parse semantics").
V8_CORNERS = [
    pytest.param("0000-12-31T23:59:59.999Z", None, id="year-0-below-range"),
    pytest.param("0001-01-01T00:00:00.000Z", "0001-01-01T00:00:00.000Z", id="range-start"),
    pytest.param("0001-01-01T00:00:00+00:01", None, id="offset-below-range"),
    pytest.param("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z", id="range-end"),
    pytest.param("9999-12-31T23:59:59-00:01", None, id="offset-above-range"),
    pytest.param("2020-01-01T10:20:30-0800", "2020-01-01T18:20:30.000Z", id="negative-offset"),
    pytest.param("2020-01-01T10:20:30.123+01:00", "2020-01-01T09:20:30.123Z", id="ms-and-offset"),
    pytest.param("2020-01-01T10:20:30.1z", "2020-01-01T10:20:30.100Z", id="lower-z-one-digit"),
    pytest.param("2020-04-31T10:00:00.000Z", "2020-05-01T10:00:00.000Z", id="apr-31-rolls-over"),
    pytest.param("2023-02-29T00:00:00.000Z", "2023-03-01T00:00:00.000Z", id="not-leap-year"),
    pytest.param("2024-02-29T23:59:59.999Z", "2024-02-29T23:59:59.999Z", id="leap-day"),
    pytest.param("2020-01-01T10:20:30.0000000000000000000001Z", None, id="over-40-chars-go-port"),
    pytest.param(
        "2020-01-01T10:20:30.01613975904Z", "2020-01-01T10:20:30.161Z", id="v8-9-digit-fraction"
    ),
    pytest.param("2020-01-01 10:20+05", "2020-01-01T05:20:00.000Z", id="legacy-offset-hours"),
    pytest.param("2020-01-01 10:20:5", "2020-01-01T10:20:05.000Z", id="legacy-one-digit-second"),
    pytest.param("2020-01-01 10:20:30:45", "2020-01-01T10:20:30.045Z", id="legacy-ms-by-colon"),
    pytest.param("0005-03-04 10:00", "2004-05-03T10:00:00.000Z", id="legacy-small-year-is-mdy"),
    pytest.param("0050-01-01 ", "1950-01-01T00:00:00.000Z", id="legacy-two-digit-year"),
    pytest.param("-2023-06-14", "2023-06-14T00:00:00.000Z", id="legacy-ignores-sign"),
    pytest.param("2020-01-01\n", "2020-01-01T00:00:00.000Z", id="newline-is-js-space"),
    pytest.param("2020-01-01\u3000", "2020-01-01T00:00:00.000Z", id="ideographic-space"),
    pytest.param("2020-01-01\u2028", None, id="line-separator-is-a-word-to-v8"),
    pytest.param("2020-01-01\x85", None, id="nel-is-not-js-space"),
    pytest.param("2020-01-01T", None, id="bare-t"),
    pytest.param("2020-01-01TZ", None, id="t-then-zone"),
    pytest.param("2020-01-01 Z", "2020-01-01T00:00:00.000Z", id="space-then-zone"),
    pytest.param("2020-01-01 +05:00", None, id="space-then-offset"),
    pytest.param("\u0662\u0660\u0662\u0660-01-01", None, id="arabic-digits"),
    pytest.param("", None, id="empty"),
    pytest.param("hello world", None, id="text"),
    pytest.param("1.0.6", None, id="version"),
]


@pytest.mark.parametrize(("text", "expected"), SPEC_3_1_TABLE + V8_CORNERS)
def test_valid_timestamp_matches_v8(text: str, expected: str | None) -> None:
    """§3.1 "Valid timestamp": the regex, V8's Date.parse, the range and the Go length cap."""
    assert valid_timestamp(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("plain", ("string", "plain"), id="str"),
        pytest.param("2020-02-31", ("datetime", "2020-03-02T00:00:00.000Z"), id="str-timestamp"),
        pytest.param("1", ("string", "1"), id="numeric-str"),
        pytest.param("true", ("string", "true"), id="bool-str"),
        pytest.param(True, ("boolean", True), id="true-before-int"),
        pytest.param(False, ("boolean", False), id="false-before-int"),
        pytest.param(0, ("int", 0), id="zero"),
        pytest.param(-42, ("int", -42), id="int"),
        pytest.param(3.0, ("int", 3), id="integral-float-is-int"),
        pytest.param(-0.0, ("int", 0), id="negative-zero"),
        pytest.param(1.5, ("float", 1.5), id="float"),
        pytest.param(2**63 - 1, ("int", 2**63 - 1), id="bigint-max"),
        pytest.param(2**63, ("float", 9.223372036854775808e18), id="int-over-bigint"),
        pytest.param(1e21, ("float", 1e21), id="1e21-over-bigint"),
        pytest.param(["a", 1, None], ("string", ArrayText('["a",1,null]')), id="array-json"),
        pytest.param(
            ["é", {"k": [True]}], ("string", ArrayText('["é",{"k":[true]}]')), id="array-nested"
        ),
        pytest.param(
            [{"b": 1, "a": [{"d": 0, "c": 1}]}],
            ("string", ArrayText('[{"a":[{"c":1,"d":0}],"b":1}]')),
            id="array-keys-sorted-like-go",
        ),
        pytest.param(None, None, id="null"),
    ],
)
def test_infer_types_like_rudderstack(value: Any, expected: tuple[ColumnType, Any] | None) -> None:
    """§3.1 order: number (integral -> int), boolean, timestamp, else string; §3.2 arrays."""
    got = infer(value)
    assert got == expected
    if got is not None and expected is not None:
        assert type(got[1]) is type(expected[1])


def test_infer_marks_arrays_for_json_columns() -> None:
    """§3.4 json ← array keeps the JSON text: infer tags it so coerce can tell it from a str."""
    typed = infer([1, 2])
    assert typed is not None
    assert isinstance(typed[1], ArrayText)
    assert not isinstance(infer("[1,2]"), ArrayText)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_infer_non_finite_float_is_a_float(value: float) -> None:
    """JSON cannot carry them, but a Python caller can: a float column, like JS's typeof."""
    typed = infer(value)
    assert typed is not None
    assert typed[0] == "float"
    assert typed[1] is value


def test_infer_rejects_objects() -> None:
    """Objects are flattened by the caller (§3.2) and never reach infer."""
    with pytest.raises(TypeError, match="dict"):
        infer({"a": 1})


ARRAY = ArrayText('["a","b"]')

# §3.4, one row per line of the table (several values for the first and last lines).
SPEC_3_4_TABLE = [
    pytest.param(50, "int", "string", "50", id="string<-int"),
    pytest.param(1.5, "float", "string", "1.5", id="string<-float"),
    pytest.param(1234567.5, "float", "string", "1.2345675e+06", id="string<-float-go-exponent"),
    pytest.param(True, "boolean", "string", "true", id="string<-boolean"),
    pytest.param(
        "2020-01-01T00:00:00.000Z",
        "datetime",
        "string",
        "2020-01-01T00:00:00.000Z",
        id="string<-datetime",
    ),
    pytest.param("x", "string", "string", "x", id="string<-string"),
    pytest.param('{"a":1}', "json", "string", '{"a":1}', id="string<-json"),
    pytest.param(ARRAY, "string", "string", ARRAY, id="string<-array"),
    pytest.param(5, "int", "float", 5.0, id="float<-int"),
    pytest.param(1.9, "float", "int", 1, id="int<-float-truncates"),
    pytest.param(-1.9, "float", "int", -1, id="int<-negative-float-truncates"),
    pytest.param(5, "int", "json", "5", id="json<-int"),
    pytest.param(1.5, "float", "json", "1.5", id="json<-float"),
    pytest.param(False, "boolean", "json", "false", id="json<-boolean"),
    pytest.param(ARRAY, "string", "json", ARRAY, id="json<-array-kept"),
    pytest.param('say "hi"', "string", "json", '"say \\"hi\\""', id="json<-string-quoted"),
    pytest.param(
        "2020-01-01T00:00:00.000Z",
        "datetime",
        "json",
        '"2020-01-01T00:00:00.000Z"',
        id="json<-datetime-quoted",
    ),
    pytest.param("[1,2]", "string", "json", '"[1,2]"', id="json<-array-looking-string-quoted"),
]


@pytest.mark.parametrize(("value", "row_type", "table_type", "expected"), SPEC_3_4_TABLE)
def test_coerce_converts(
    value: Any, row_type: ColumnType, table_type: ColumnType, expected: Any
) -> None:
    """§3.4: the conversions of S worker.go HandleSchemaChange."""
    stored, reason = coerce(value, row_type, table_type)
    assert reason is None
    assert stored == expected
    assert type(stored) is type(expected)


@pytest.mark.parametrize(
    ("value", "row_type", "table_type"),
    [
        pytest.param("x", "string", "datetime", id="datetime<-string"),
        pytest.param("x", "string", "boolean", id="boolean<-string"),
        pytest.param("7", "string", "int", id="int<-string"),
        pytest.param("2020-01-01T00:00:00.000Z", "datetime", "int", id="int<-datetime"),
        pytest.param(1, "int", "boolean", id="boolean<-int"),
        pytest.param("1.5", "string", "float", id="float<-string"),
        pytest.param(True, "boolean", "int", id="int<-boolean"),
        pytest.param(True, "boolean", "float", id="float<-boolean"),
        pytest.param(1.5, "float", "boolean", id="boolean<-float"),
        pytest.param(1, "int", "datetime", id="datetime<-int"),
        pytest.param(True, "boolean", "datetime", id="datetime<-boolean"),
        pytest.param("2020-01-01T00:00:00.000Z", "datetime", "boolean", id="boolean<-datetime"),
        pytest.param('{"a":1}', "json", "int", id="int<-json"),
        pytest.param(math.nan, "float", "int", id="int<-nan"),
    ],
)
def test_coerce_discards_with_rudderstack_reason(
    value: Any, row_type: ColumnType, table_type: ColumnType
) -> None:
    """§3.4 "anything else": NULL plus the reason text, table type first."""
    assert coerce(value, row_type, table_type) == (
        None,
        f"incompatible schema conversion from {table_type} to {row_type}",
    )


def test_coerce_same_type_is_identity() -> None:
    value = ["not", "checked"]
    assert coerce(value, "string", "string")[0] is value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(1.5, "1.5", id="1.5"),
        pytest.param(-2.25, "-2.25", id="negative"),
        pytest.param(1e21, "1e+21", id="1e21"),
        pytest.param(1e6, "1e+06", id="1e6-exponent-from-6"),
        pytest.param(123456.0, "123456", id="123456"),
        pytest.param(123456.5, "123456.5", id="exponent-5-fixed"),
        pytest.param(1234567.5, "1.2345675e+06", id="exponent-6"),
        pytest.param(0.0001, "0.0001", id="exponent-minus-4"),
        pytest.param(0.00001, "1e-05", id="exponent-minus-5"),
        pytest.param(1.5e-7, "1.5e-07", id="small"),
        pytest.param(1e100, "1e+100", id="three-digit-exponent"),
        pytest.param(0.1 + 0.2, "0.30000000000000004", id="shortest-round-trip"),
        pytest.param(0.0, "0", id="zero"),
        pytest.param(math.nan, "NaN", id="nan"),
        pytest.param(math.inf, "+Inf", id="inf"),
        pytest.param(-math.inf, "-Inf", id="-inf"),
    ],
)
def test_go_text_prints_floats_like_fmt_sprint(value: float, expected: str) -> None:
    """§3.4 fmt.Sprint of a float64 is %v: strconv 'g' with shortest digits, %e at exp >= 6."""
    assert go_text(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("text", "text", id="string"),
        pytest.param(ARRAY, '["a","b"]', id="array-json-text"),
        pytest.param(True, "true", id="true"),
        pytest.param(False, "false", id="false"),
        pytest.param(50, "50", id="int"),
        pytest.param(-(2**63), "-9223372036854775808", id="int-min"),
        pytest.param(1.5, "1.5", id="float"),
        pytest.param(None, "<nil>", id="nil"),
        pytest.param(["a", 1, True], "[a 1 true]", id="go-slice"),
        pytest.param({"b": 1, "a": "x"}, "map[a:x b:1]", id="go-map-sorted"),
    ],
)
def test_discard_text_is_fmt_sprint(value: Any, expected: str) -> None:
    """§3.4 `column_value`: fmt.Sprint of the original value."""
    assert discard_text(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(3.0, "3", id="integral"),
        pytest.param(1.5, "1.5", id="fraction"),
        pytest.param(1e21, "1e+21", id="1e21"),
        pytest.param(1.5e20, "150000000000000000000", id="below-1e21-fixed"),
        pytest.param(0.000001, "0.000001", id="1e-6-fixed"),
        pytest.param(1e-7, "1e-7", id="1e-7"),
        pytest.param(-1.25e-8, "-1.25e-8", id="negative-small"),
        pytest.param(math.nan, "NaN", id="nan"),
    ],
)
def test_js_number_text(value: float, expected: str) -> None:
    """JS Number#toString, as JSON.stringify and the gateway's stringify print numbers."""
    assert js_number_text(value) == expected


def test_merge_type_first_seen_wins() -> None:
    """§3.3: within a batch and against the warehouse, the first type wins."""
    assert merge_type(None, "int") == "int"
    assert merge_type("int", "float") == "int"
    assert merge_type("string", "datetime") == "string"
