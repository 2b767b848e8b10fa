"""loader/enrich.py: what the server adds (http-api.md; rudder-gateway.md §8-§9)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, strategies as st

from loader.enrich import client_ip, enrich, format_time, parse_time, rudder_id
from loader.spec import identifier

RECEIVED = datetime(2020, 2, 2, 0, 23, 9, 544999, tzinfo=UTC)
R = "2020-02-02T00:23:09.544Z"  # RECEIVED as written: milliseconds truncated
IST = timezone(timedelta(hours=5, minutes=30))


def _enrich(
    event: dict[str, Any],
    *,
    sent_at: str | None = None,
    request_ip: str | None = "10.0.0.1",
    historical: bool = False,
) -> dict[str, Any]:
    return enrich(
        {"anonymousId": "a1", **event},
        received_at=RECEIVED,
        request_ip=request_ip,
        sent_at=sent_at,
        historical=historical,
    )


def _at(text: str) -> datetime:
    parsed = parse_time(text)
    assert parsed is not None
    return parsed


# --- messageId (http-api.md "What the server adds"; rudder-gateway.md §8) ---------------------

KEPT_IDS = [
    pytest.param("abc-123", "abc-123", id="kept"),
    pytest.param("  abc-123 ", "abc-123", id="trimmed"),
    pytest.param("\u0000 -a-random-string \u00a0\t", "-a-random-string", id="gateway-test"),
    pytest.param("id\u200bwith\u200dzero-width", "idwithzero-width", id="inner-invisible"),
    pytest.param("τυχαίο;", "τυχαίο;", id="non-ascii"),
]


@pytest.mark.parametrize(("sent", "kept"), KEPT_IDS)
def test_message_id_kept_sanitized(sent: str, kept: str) -> None:
    """rudder-gateway.md §8: a string messageId is sanitised, trimmed and written back."""
    assert _enrich({"messageId": sent})["messageId"] == kept


NEW_IDS = [
    pytest.param({}, id="absent"),
    pytest.param({"messageId": None}, id="null"),
    pytest.param({"messageId": ""}, id="empty"),
    pytest.param({"messageId": " \t "}, id="blank"),
    pytest.param({"messageId": "\u200b\u00a0\ufeff"}, id="invisible-only"),
    pytest.param({"messageId": 123}, id="number"),
    pytest.param({"messageId": {"id": "x"}}, id="object"),
]


@pytest.mark.parametrize("event", NEW_IDS)
def test_message_id_replaced_by_uuid4(event: dict[str, Any]) -> None:
    """rudder-gateway.md §8: blank or non-string messageId becomes a new UUIDv4."""
    message_id = _enrich(event)["messageId"]
    assert isinstance(message_id, str)
    assert uuid.UUID(message_id).version == 4
    assert str(uuid.UUID(message_id)) == message_id


def test_new_message_ids_are_unique() -> None:
    """http-api.md "What the server adds": each generated messageId is fresh."""
    assert len({_enrich({})["messageId"] for _ in range(1000)}) == 1000


# --- rudderId (rudder-gateway.md §8) ------------------------------------------------------------

USER1 = "57ba86a6-7c79-4539-ae48-3e6fd7550f6f"  # rudder-gateway.md §8 vectors
ANON1 = "634f5689-4da6-4a63-ad93-95cc7cd2c335"
BOTH = "1fdd8eb3-fd53-4b96-afef-9ef01cfcaca6"

RUDDER_IDS = [
    pytest.param("user1", "", USER1, id="user-only"),
    pytest.param("", "anon1", ANON1, id="anon-only"),
    pytest.param("user1", "anon1", BOTH, id="both"),
]


@pytest.mark.parametrize(("user_id", "anonymous_id", "expected"), RUDDER_IDS)
def test_rudder_id_vectors(user_id: str, anonymous_id: str, expected: str) -> None:
    """rudder-gateway.md §8: GetMD5UUID test vectors."""
    assert rudder_id(user_id, anonymous_id) == expected


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        pytest.param({"userId": "user1"}, USER1, id="user-only"),
        pytest.param({"userId": " user1\u200b", "anonymousId": "\t"}, USER1, id="user-sanitized"),
        pytest.param({"anonymousId": "anon1"}, ANON1, id="anon-only"),
        pytest.param({"userId": "user1", "anonymousId": "anon1"}, BOTH, id="both"),
        pytest.param(
            {"userId": 123, "anonymousId": None}, rudder_id("123", ""), id="numeric-user-id"
        ),
        pytest.param({"userId": "user1", "rudderId": "client"}, USER1, id="overwritten"),
    ],
)
def test_rudder_id_from_sanitized_ids(event: dict[str, Any], expected: str) -> None:
    """rudder-gateway.md §8: from the §7 strings of userId and anonymousId; always overwritten."""
    enriched = enrich(event, received_at=RECEIVED, request_ip=None, sent_at=None)
    assert enriched["rudderId"] == expected


def test_rudder_id_uses_identifier_strings() -> None:
    """rudder-gateway.md §7-§8: the same identifier() strings the validation uses."""
    event = {"userId": {"b": 1, "a": 2}, "anonymousId": 1.0}
    expected = rudder_id(identifier(event["userId"]), identifier(event["anonymousId"]))
    assert expected == rudder_id('{"a":2,"b":1}', "1")
    assert _enrich(event)["rudderId"] == expected


# --- receivedAt and request_ip (http-api.md "What the server adds"; rudder-gateway.md §8) ----


def test_received_at_is_always_the_servers() -> None:
    """http-api.md "What the server adds": receivedAt is the server's time, in UTC, ms."""
    event = _enrich({"receivedAt": "2019-01-01T00:00:00.000Z"})
    assert event["receivedAt"] == R


def test_received_at_naive_is_utc() -> None:
    """rudder-gateway.md §9: a naive server time is UTC."""
    event = enrich(
        {"userId": "u"}, received_at=RECEIVED.replace(tzinfo=None), request_ip=None, sent_at=None
    )
    assert event["receivedAt"] == R


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        pytest.param("2019-01-01T00:00:00.123456Z", "2019-01-01T00:00:00.123Z", id="utc"),
        pytest.param("2019-01-01 05:30:00+05:30", "2019-01-01T05:30:00.000+05:30", id="offset"),
        pytest.param("1546300800", "2019-01-01T00:00:00.000Z", id="unix-seconds"),
        pytest.param("not a time", R, id="unparsable-uses-server"),
        pytest.param(1546300800, R, id="number-uses-server"),
        pytest.param(None, R, id="null-uses-server"),
    ],
)
def test_historical_keeps_parsable_received_at(sent: Any, kept: str) -> None:
    """http-api.md historical imports: an imported event's parsable receivedAt is kept."""
    event = _enrich({"receivedAt": sent}, historical=True, request_ip=None)
    assert event["receivedAt"] == kept


def test_historical_received_at_drives_the_time_fields() -> None:
    """rudder-gateway.md §9 with an imported receivedAt: the defaults come from it."""
    event = _enrich(
        {"receivedAt": "2019-01-01T00:00:10.000Z", "sentAt": "2019-01-01T00:00:12.000Z"},
        historical=True,
    )
    assert event["originalTimestamp"] == "2019-01-01T00:00:10.000Z"
    assert event["timestamp"] == "2019-01-01T00:00:08.000Z"


@pytest.mark.parametrize(
    ("event", "request_ip", "expected"),
    [
        pytest.param({}, "1.2.3.4", "1.2.3.4", id="set"),
        pytest.param({"request_ip": "9.9.9.9"}, "1.2.3.4", "1.2.3.4", id="overwritten"),
        pytest.param({"request_ip": "9.9.9.9"}, None, "9.9.9.9", id="import-keeps"),
        pytest.param({}, "", "", id="empty-when-unknown"),
    ],
)
def test_request_ip(event: dict[str, Any], request_ip: str | None, expected: str) -> None:
    """http-api.md "What the server adds": request_ip is the server's when it passes one."""
    assert _enrich(event, request_ip=request_ip)["request_ip"] == expected


def test_request_ip_absent_stays_absent_on_import() -> None:
    """http-api.md historical imports: no request_ip is invented."""
    assert "request_ip" not in _enrich({}, request_ip=None)


def test_context_ip_kept() -> None:
    """http-api.md "What the server adds": context.ip is kept as sent."""
    event = _enrich({"context": {"ip": "5.6.7.8"}}, request_ip="1.2.3.4")
    assert event["context"] == {"ip": "5.6.7.8"}


def test_enrich_mutates_and_returns_the_event() -> None:
    """http-api.md "What the server adds": enrich() adds the fields to the dict and returns it."""
    event: dict[str, Any] = {"userId": "u", "event": "e", "properties": {"a": 1}}
    out = enrich(event, received_at=RECEIVED, request_ip="1.1.1.1", sent_at=None)
    assert out is event
    assert event["properties"] == {"a": 1}
    assert set(event) == {
        "userId",
        "event",
        "properties",
        "messageId",
        "receivedAt",
        "request_ip",
        "rudderId",
        "originalTimestamp",
        "sentAt",
        "timestamp",
    }


# --- Time fields (rudder-gateway.md §9) -------------------------------------------------------

ORIG = "2020-02-02T00:23:00.000Z"  # originalTimestamp: 9.544 s before R
SENT = "2020-02-02T00:23:10.000Z"  # sentAt: 0.456 s after R (client clock ahead)
HEADER = "2020-02-02T00:23:12.000Z"  # another sentAt, e.g. from the batch or the SentAt header

TIME_FIELDS = [
    pytest.param({}, None, (R, R, R), id="neither-field"),
    pytest.param({"originalTimestamp": ORIG}, None, (ORIG, R, ORIG), id="only-original"),
    pytest.param(
        {"sentAt": SENT}, None, (R, SENT, "2020-02-02T00:23:09.088Z"), id="only-sent-2R-minus-S"
    ),
    pytest.param(
        {"originalTimestamp": ORIG, "sentAt": SENT},
        None,
        (ORIG, SENT, "2020-02-02T00:22:59.544Z"),
        id="both-skew-corrected",
    ),
    pytest.param(
        {
            "originalTimestamp": ORIG,
            "sentAt": SENT,
            "timestamp": "2020-01-01T10:00:00.123456+05:30",
        },
        None,
        (ORIG, SENT, "2020-01-01T10:00:00.123+05:30"),
        id="timestamp-kept-with-offset",
    ),
    pytest.param(
        {"timestamp": "2015-2-02T00:30:08.276Z"},
        None,
        (R, R, "2015-02-02T00:30:08.276Z"),
        id="timestamp-lenient-format-kept",
    ),
    pytest.param(
        {"originalTimestamp": ORIG, "timestamp": "yesterday"},
        None,
        (ORIG, R, ORIG),
        id="timestamp-unparsable-computed",
    ),
    pytest.param(
        {"originalTimestamp": ORIG, "timestamp": 1580602989},
        None,
        (ORIG, R, ORIG),
        id="timestamp-number-computed",
    ),
    pytest.param(
        {"originalTimestamp": 1580602989000, "sentAt": SENT},
        None,
        (R, SENT, "2020-02-02T00:23:09.088Z"),
        id="original-number-is-absent",
    ),
    pytest.param(
        {"originalTimestamp": "", "sentAt": "garbage"}, None, (R, R, R), id="unparsable-absent"
    ),
    pytest.param(
        {"originalTimestamp": ORIG, "sentAt": None}, None, (ORIG, R, ORIG), id="null-sent-at-absent"
    ),
    pytest.param(
        {"originalTimestamp": ORIG},
        HEADER,
        (ORIG, HEADER, "2020-02-02T00:22:57.544Z"),
        id="fallback-sent-at-used-when-event-has-none",
    ),
    pytest.param(
        {"originalTimestamp": ORIG, "sentAt": "later"},
        HEADER,
        (ORIG, HEADER, "2020-02-02T00:22:57.544Z"),
        id="fallback-sent-at-used-when-event-one-unparsable",
    ),
    pytest.param(
        {"originalTimestamp": ORIG, "sentAt": SENT},
        HEADER,
        (ORIG, SENT, "2020-02-02T00:22:59.544Z"),
        id="fallback-ignored-when-event-has-one",
    ),
    pytest.param({}, "not a time", (R, R, R), id="fallback-unparsable-ignored"),
    pytest.param(
        {"originalTimestamp": "2020-02-02T05:53:00+05:30"},
        None,
        ("2020-02-02T05:53:00.000+05:30", R, ORIG),
        id="offset-kept-computed-in-utc",
    ),
    pytest.param(
        {"originalTimestamp": "2020-02-02T00:23:00.123999Z", "sentAt": "1580602990000"},
        None,
        ("2020-02-02T00:23:00.123Z", "2020-02-02T00:23:10.000Z", "2020-02-02T00:22:59.667Z"),
        id="full-precision-then-truncated",
    ),
]


@pytest.mark.parametrize(("event", "sent_at", "expected"), TIME_FIELDS)
def test_time_fields(event: dict[str, Any], sent_at: str | None, expected: tuple[str, ...]) -> None:
    """rudder-gateway.md §9: originalTimestamp, sentAt, timestamp (and receivedAt = R)."""
    out = _enrich(event, sent_at=sent_at)
    assert out["receivedAt"] == R
    assert (out["originalTimestamp"], out["sentAt"], out["timestamp"]) == expected


def test_time_skew_saturates_like_go_duration() -> None:
    """rudder-gateway.md §9: sentAt - originalTimestamp is a Go Duration, capped at ~292 years."""
    out = _enrich({"originalTimestamp": "0001-01-01T00:00:00Z", "sentAt": "9999-12-31T00:00:00Z"})
    cap = timedelta(microseconds=(2**63 - 1) // 1000)
    assert out["timestamp"] == format_time(_at(R) - cap)


def test_time_overflow_near_year_one_falls_back() -> None:
    """rudder-gateway.md §9: a computation out of datetime's range never raises."""
    out = _enrich(
        {
            "receivedAt": "0001-01-02T00:00:00Z",
            "sentAt": "2000-01-01T00:00:00Z",
            "originalTimestamp": "0001-01-01T00:00:00Z",
        },
        historical=True,
    )
    assert out["timestamp"] == "0001-01-02T00:00:00.000Z"


# --- parse_time (rudder-gateway.md §9, "parsable") ----------------------------------------------

ACCEPTED = [
    pytest.param("2020-02-02T00:23:09.544Z", datetime(2020, 2, 2, 0, 23, 9, 544000, UTC)),
    pytest.param("2020-02-02T00:23:09Z", datetime(2020, 2, 2, 0, 23, 9, tzinfo=UTC)),
    pytest.param("2020-02-02T00:23:09", datetime(2020, 2, 2, 0, 23, 9, tzinfo=UTC), id="no-zone"),
    pytest.param("2020-02-02 00:23:09", datetime(2020, 2, 2, 0, 23, 9, tzinfo=UTC), id="space"),
    pytest.param("2020-02-02T00:23:09.5Z", datetime(2020, 2, 2, 0, 23, 9, 500000, UTC)),
    pytest.param(
        "2020-02-02T00:23:09.123456789Z",
        datetime(2020, 2, 2, 0, 23, 9, 123456, UTC),
        id="nanoseconds-truncated",
    ),
    pytest.param(
        "2020-02-02T00:23:09.9999999Z",
        datetime(2020, 2, 2, 0, 23, 9, 999999, UTC),
        id="fraction-truncated-not-rounded",
    ),
    pytest.param(
        "2014-05-11 08:20:13,787", datetime(2014, 5, 11, 8, 20, 13, 787000, UTC), id="comma"
    ),
    pytest.param(
        "2015-2-02T00:30:08.276Z",
        datetime(2015, 2, 2, 0, 30, 8, 276000, UTC),
        id="single-digit-month",
    ),
    pytest.param("2015-2-2T3:04:05Z", datetime(2015, 2, 2, 3, 4, 5, tzinfo=UTC), id="one-digits"),
    pytest.param("2020-02-02T05:53:09+05:30", datetime(2020, 2, 2, 5, 53, 9, tzinfo=IST)),
    pytest.param("2020-02-02T05:53:09+0530", datetime(2020, 2, 2, 5, 53, 9, tzinfo=IST)),
    pytest.param(
        "2020-02-02T05:53:09.1+05",
        datetime(2020, 2, 2, 5, 53, 9, 100000, timezone(timedelta(hours=5))),
        id="hour-offset",
    ),
    pytest.param(
        "2009-08-12T22:15:09-07:00",
        datetime(2009, 8, 12, 22, 15, 9, tzinfo=timezone(timedelta(hours=-7))),
    ),
    pytest.param(
        "2019-05-29T08:41-04",
        datetime(2019, 5, 29, 8, 41, tzinfo=timezone(timedelta(hours=-4))),
        id="no-seconds",
    ),
    pytest.param(
        "2014-04-26 13:13:43 +0800",
        datetime(2014, 4, 26, 13, 13, 43, tzinfo=timezone(timedelta(hours=8))),
        id="space-before-offset",
    ),
    pytest.param(
        "2012-08-03 18:31:59.257000000 +0000 UTC",
        datetime(2012, 8, 3, 18, 31, 59, 257000, UTC),
        id="go-time-string",
    ),
    pytest.param(
        "2014-12-16 06:20:00 UTC", datetime(2014, 12, 16, 6, 20, tzinfo=UTC), id="utc-suffix"
    ),
    pytest.param("2020-02-02T00:23:09-00:00", datetime(2020, 2, 2, 0, 23, 9, tzinfo=UTC)),
    pytest.param("2014/03/31", datetime(2014, 3, 31, tzinfo=UTC), id="slashes"),
    pytest.param("2014-04-26", datetime(2014, 4, 26, tzinfo=UTC), id="date-only"),
    pytest.param("2014-04", datetime(2014, 4, 1, tzinfo=UTC), id="year-month"),
    pytest.param("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC), id="year-one"),
    pytest.param("9999-12-31T23:59:59.999Z", datetime(9999, 12, 31, 23, 59, 59, 999000, UTC)),
    pytest.param("1332151919", datetime(2012, 3, 19, 10, 11, 59, tzinfo=UTC), id="unix-s"),
    pytest.param("1384216367189", datetime(2013, 11, 12, 0, 32, 47, 189000, UTC), id="unix-ms"),
    pytest.param("1384216367111222", datetime(2013, 11, 12, 0, 32, 47, 111222, UTC), id="unix-us"),
    pytest.param(
        "1384216367111222333", datetime(2013, 11, 12, 0, 32, 47, 111222, UTC), id="unix-ns"
    ),
    pytest.param("0000000000", datetime(1970, 1, 1, tzinfo=UTC), id="unix-zero"),
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED)
def test_parse_time_accepts(text: str, expected: datetime) -> None:
    """rudder-gateway.md §9: the dateparse formats clients send; offsets kept."""
    parsed = parse_time(text)
    assert parsed == expected
    assert parsed is not None and parsed.utcoffset() == expected.utcoffset()


REJECTED = [
    pytest.param(1580602989, id="json-number"),
    pytest.param(1580602989.5, id="json-float"),
    pytest.param(None, id="null"),
    pytest.param(True, id="bool"),
    pytest.param({"t": "2020-02-02"}, id="object"),
    pytest.param(["2020-02-02"], id="list"),
    pytest.param("", id="empty"),
    pytest.param("   ", id="spaces"),
    pytest.param("yesterday", id="word"),
    pytest.param(" 2020-02-02T00:23:09Z", id="leading-space"),
    pytest.param("2020-02-02T00:23:09Z ", id="trailing-space"),
    pytest.param("2020-13-02T00:23:09Z", id="month-13"),
    pytest.param("2020-02-30T00:23:09Z", id="february-30"),
    pytest.param("2020-02-02T24:00:00Z", id="hour-24"),
    pytest.param("2020-02-02T00:60:00Z", id="minute-60"),
    pytest.param("2020-02-02T00:00:60Z", id="leap-second"),
    pytest.param("0000-01-01T00:00:00Z", id="year-zero"),
    pytest.param("10000-01-01T00:00:00Z", id="year-five-digits"),
    pytest.param("2020-02-02T00:23:09+24:00", id="offset-24h"),
    pytest.param("2020-02-02T00:23:09+05:60", id="offset-60-minutes"),
    pytest.param("2020-02-02T00:23:09.Z", id="empty-fraction"),
    pytest.param("2020-02-02T00", id="hour-only"),
    pytest.param("2020-02-02T0023:09Z", id="mangled-time"),
    pytest.param("2020-02-02X00:23:09Z", id="bad-separator"),
    pytest.param("2020-02/02", id="mixed-separators"),
    pytest.param("2014", id="year-only-4-digits"),
    pytest.param("123456789", id="9-digits"),
    pytest.param("12345678901", id="11-digits"),
    pytest.param("12345678901234567890", id="20-digits"),
    pytest.param("-1332151919", id="negative-unix"),
    pytest.param(
        "\u0661\u0663\u0663\u0662\u0661\u0665\u0661\u0669\u0661\u0669", id="arabic-digits"
    ),
    pytest.param("\uff12\uff10\uff12\uff10-02-02", id="fullwidth-digits"),
    pytest.param("2020-W05-1T00:23:09.544Z", id="iso-week-date"),
    pytest.param("\uff12\uff10\uff12\uff10-02-02T00:23:09.544Z", id="canonical-shape-fullwidth"),
    pytest.param("2020-02-02T00:23:09.54xZ", id="canonical-shape-letter"),
    pytest.param("2020-02-30T00:23:09.544Z", id="canonical-shape-bad-day"),
    pytest.param("Sun, 02 Feb 2020 00:23:09 GMT", id="rfc1123-not-supported"),
]


@pytest.mark.parametrize("value", REJECTED)
def test_parse_time_rejects(value: Any) -> None:
    """rudder-gateway.md §9: numbers are never parsed; garbage and out of range give None."""
    assert parse_time(value) is None


# --- format_time (rudder-gateway.md §9) ---------------------------------------------------------

FORMATS = [
    pytest.param(datetime(2020, 2, 2, 0, 23, 9, 544999, UTC), R, id="ms-truncated"),
    pytest.param(datetime(2020, 2, 2, 0, 23, 9, 999999, UTC), "2020-02-02T00:23:09.999Z"),
    pytest.param(datetime(2020, 2, 2, 0, 23, 9, tzinfo=UTC), "2020-02-02T00:23:09.000Z"),
    pytest.param(datetime(2020, 2, 2, 0, 23, 9, 1000), "2020-02-02T00:23:09.001Z", id="naive"),
    pytest.param(datetime(2020, 2, 2, 5, 53, 9, 544000, IST), "2020-02-02T05:53:09.544+05:30"),
    pytest.param(
        datetime(2020, 2, 2, 0, 23, 9, tzinfo=timezone(timedelta(minutes=-30))),
        "2020-02-02T00:23:09.000-00:30",
        id="negative-half-hour",
    ),
    pytest.param(
        datetime(2020, 2, 2, tzinfo=timezone(timedelta(0), "GMT")),
        "2020-02-02T00:00:00.000Z",
        id="zero-offset-named-zone",
    ),
    pytest.param(
        datetime(2020, 2, 2, tzinfo=timezone(timedelta(hours=1, seconds=30))),
        "2020-02-02T00:00:00.000+01:00",
        id="offset-seconds-dropped",
    ),
    pytest.param(datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00.000Z", id="year-one"),
]


@pytest.mark.parametrize(("dt", "text"), FORMATS)
def test_format_time(dt: datetime, text: str) -> None:
    """rudder-gateway.md §9: `2006-01-02T15:04:05.000Z07:00`, truncated, Z or the offset."""
    assert format_time(dt) == text


OFFSETS = st.one_of(
    st.none(),
    st.just(UTC),
    st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m))),
)


@given(st.datetimes(timezones=OFFSETS))
def test_format_then_parse_round_trips_to_the_millisecond(dt: datetime) -> None:
    """rudder-gateway.md §9: what format_time writes, parse_time reads back (ms, offset kept)."""
    expected = dt.replace(microsecond=dt.microsecond // 1000 * 1000)
    if expected.tzinfo is None:
        expected = expected.replace(tzinfo=UTC)
    text = format_time(dt)
    parsed = parse_time(text)
    assert parsed == expected
    assert parsed is not None and parsed.utcoffset() == expected.utcoffset()
    assert format_time(parsed) == text


# --- client_ip (http-api.md "What the server adds"; rudder-gateway.md §8) -------------------

TRUSTED = ("127.0.0.1", "::1")

CLIENT_IPS = [
    pytest.param("203.0.113.9", None, "203.0.113.9", id="no-proxy-no-header"),
    pytest.param("203.0.113.9", "1.2.3.4", "203.0.113.9", id="untrusted-peer-header-ignored"),
    pytest.param("127.0.0.1", "1.2.3.4", "1.2.3.4", id="trusted-proxy"),
    pytest.param("::1", "2001:db8::1, 10.0.0.1", "2001:db8::1", id="trusted-first-entry"),
    pytest.param("127.0.0.1", " 1.2.3.4 ,10.0.0.1", "1.2.3.4", id="spaces-removed"),
    pytest.param("127.0.0.1", None, "127.0.0.1", id="trusted-without-header"),
    pytest.param("127.0.0.1", "", "127.0.0.1", id="trusted-empty-header"),
    pytest.param("127.0.0.1", " , 1.2.3.4", "127.0.0.1", id="trusted-blank-first-entry"),
    pytest.param(None, "1.2.3.4", "", id="no-peer"),
    pytest.param(None, None, "", id="nothing-known"),
]


@pytest.mark.parametrize(("peer", "forwarded_for", "expected"), CLIENT_IPS)
def test_client_ip(peer: str | None, forwarded_for: str | None, expected: str) -> None:
    """http-api.md "What the server adds": X-Forwarded-For only from a trusted proxy."""
    assert client_ip(peer, forwarded_for, TRUSTED) == expected


def test_client_ip_without_trusted_proxies() -> None:
    """http-api.md "What the server adds": with no trusted proxy the peer always wins."""
    assert client_ip("127.0.0.1", "1.2.3.4", ()) == "127.0.0.1"
