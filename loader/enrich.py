"""What the server adds to a validated event: messageId, receivedAt, request_ip, rudderId, times.

Pure: the clock and the peer come in as arguments (spec/http-api.md; rudder-gateway.md §8-§9).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Collection
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import Any

from loader.spec import identifier
from loader.types import Event

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Go's time.Duration is an int64 of nanoseconds: sentAt - originalTimestamp saturates there.
_MAX_DURATION = timedelta(microseconds=(2**63 - 1) // 1000)
_UNIX_DIGITS = {10: 1_000_000, 13: 1_000, 16: 1}  # digits -> microseconds per unit; 19 is ns
_TIME_RE = re.compile(
    r"(\d{4})([-/])(\d{1,2})"
    r"(?:\2(\d{1,2})(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d++))?)?)?)?"
    r"(?: ?(?:(Z)|([+-])(\d{2})(?::?(\d{2}))?)(?: [A-Z]{3,5})?| UTC| GMT)?",
    re.ASCII,
)
_ZONES: dict[int, timezone] = {0: UTC}
# The RFC 4122 variant nibble for each hex digit (its top two bits become 10).
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def enrich(
    event: Event,
    *,
    received_at: datetime,
    request_ip: str | None,
    sent_at: str | None,
    historical: bool = False,
) -> Event:
    """Add the server's fields to `event` in place and return it.

    `sent_at` is the batch-level `sentAt` or the `SentAt` header, used when the event has none.
    `historical` (imports) keeps a parsable `receivedAt` of the event; `request_ip` None keeps
    the event's own.
    """
    message_id = event.get("messageId")
    message_id = identifier(message_id) if isinstance(message_id, str) else ""
    event["messageId"] = message_id or _uuid_v4(os.urandom(16).hex())

    own = _written(event.get("receivedAt")) if historical else None
    if own is None:
        received, received_text = _server_time(received_at, received_at.tzinfo)
    else:
        received, received_text = _server_time(own[0], own[0].tzinfo)
    event["receivedAt"] = received_text
    if request_ip is not None:
        event["request_ip"] = request_ip
    user, anonymous = event.get("userId"), event.get("anonymousId")
    if (type(user) is str or user is None) and (type(anonymous) is str or anonymous is None):
        event["rudderId"] = _rudder_id_of(user, anonymous)
    else:  # numbers and objects: uncached (-0.0 == 0.0 as a key, yet they are written apart)
        event["rudderId"] = rudder_id(identifier(user), identifier(anonymous))

    original = _written(event.get("originalTimestamp"))
    sent = event.get("sentAt")
    sent = _written_shared(sent) if type(sent) is str else _written(sent)
    if sent is None and sent_at is not None:
        sent = _written_shared(sent_at)
    event["originalTimestamp"] = received_text if original is None else original[1]
    event["sentAt"] = received_text if sent is None else sent[1]
    timestamp = _written(event.get("timestamp"))
    if timestamp is not None:
        event["timestamp"] = timestamp[1]
        return event
    skew = (received if sent is None else sent[0]) - (received if original is None else original[0])
    if not skew and received.tzinfo is UTC:
        event["timestamp"] = received_text
        return event
    skew = max(-_MAX_DURATION, min(skew, _MAX_DURATION))
    try:
        computed = received - skew
        if computed.tzinfo is not UTC:
            computed = computed.astimezone(UTC)
    except OverflowError:  # only with an imported receivedAt within 292 years of year 1 or 9999
        computed = received
    event["timestamp"] = format_time(computed)
    return event


def format_time(dt: datetime) -> str:
    """Go's `2006-01-02T15:04:05.000Z07:00`: milliseconds truncated, `Z` for UTC, else `+05:30`.

    A naive datetime is UTC.
    """
    text = dt.isoformat(timespec="milliseconds")  # truncates, never rounds
    if not dt.utcoffset():
        return text[:23] + "Z"
    return text[:29]  # Go prints no seconds of an offset


def parse_time(value: Any) -> datetime | None:
    """A JSON string as araddon/dateparse reads it (the formats clients send), else None.

    ISO 8601 / RFC 3339 with `T` or a space, single-digit month/day/hour, any fraction (kept to
    the microsecond), zone `Z`, `+05:30`, `+0530`, `+05` or none (UTC), the date alone; strings
    of 10, 13, 16 or 19 digits are Unix s, ms, µs or ns. The parsed offset is kept. Never raises.
    """
    if not isinstance(value, str):
        return None
    n = len(value)
    if _canonical(value):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    if value.isdigit() and value.isascii():
        if n == 19:
            return _EPOCH + timedelta(microseconds=int(value) // 1000)
        unit = _UNIX_DIGITS.get(n)
        return None if unit is None else _EPOCH + timedelta(microseconds=int(value) * unit)
    match = _TIME_RE.fullmatch(value)
    if match is None:
        return None
    year, _, month, day, hour, minute, second, fraction, _, sign, zone_h, zone_m = match.groups()
    zone = UTC
    if sign is not None:
        hours, minutes = int(zone_h), int(zone_m or 0)
        if hours > 23 or minutes > 59:
            return None
        offset = (hours * 60 + minutes) * (-1 if sign == "-" else 1)
        zone = _ZONES.get(offset) or _ZONES.setdefault(offset, timezone(timedelta(minutes=offset)))
    try:
        return datetime(
            int(year),
            int(month),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int(fraction[:6].ljust(6, "0")) if fraction else 0,
            zone,
        )
    except ValueError:  # month 13, day 31 of a 30-day month, year 0, hour 24, ...
        return None


def rudder_id(user_id: str, anonymous_id: str) -> str:
    """rudder-go-kit GetMD5UUID: the MD5 of `userId:anonymousId` with v4 bits, as a UUID."""
    return _uuid_v4(
        hashlib.md5(f"{user_id}:{anonymous_id}".encode(), usedforsecurity=False).hexdigest()
    )


def client_ip(peer: str | None, forwarded_for: str | None, trusted_proxies: Collection[str]) -> str:
    """The first `X-Forwarded-For` entry (spaces removed) when `peer` is a trusted proxy.

    Otherwise the peer's address (without port), "" when nothing is known.
    """
    if forwarded_for and peer is not None and peer in trusted_proxies:
        first = forwarded_for.split(",", 1)[0].replace(" ", "")
        if first:
            return first
    return peer or ""


def _uuid_v4(h: str) -> str:
    """32 hex digits as a UUID string with the version-4 and RFC 4122 variant bits set."""
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def _canonical(value: str) -> bool:
    """The shape of `2020-02-02T00:23:09.544Z`, what the SDKs and format_time write."""
    # value[4:20:3] is the separators at 4, 7, 10, 13, 16 and 19, compared in one go.
    return len(value) == 24 and value[23] == "Z" and value[4:20:3] == "--T::."


def _written(value: Any) -> tuple[datetime, str] | None:
    """A time field parsed and as format_time writes it; a canonical string is its own form."""
    if value is None:  # absent: the common case for originalTimestamp or timestamp
        return None
    if isinstance(value, str) and _canonical(value):
        try:
            return datetime.fromisoformat(value), value
        except ValueError:
            pass  # not a real date (month 13): parse_time gives the answer
    parsed = parse_time(value)
    return None if parsed is None else (parsed, format_time(parsed))


_written_shared = lru_cache(maxsize=256)(_written)
"""_written for values shared by the events of a request: `sentAt` (set once per flush by
the SDKs) and the batch's or the header's; results are immutable, so sharing them is safe."""


@lru_cache(maxsize=4096)
def _rudder_id_of(user_id: str | None, anonymous_id: str | None) -> str:
    """rudder_id of the ids as sent, for string (or absent) ids: a batch's events usually
    share them, and the MD5 and UUID formatting were a third of enrich()'s cost."""
    return rudder_id(identifier(user_id), identifier(anonymous_id))


@lru_cache(maxsize=64)
def _server_time(received_at: datetime, zone: tzinfo | None) -> tuple[datetime, str]:
    """receivedAt cut to the millisecond (Go's processor reads it back from that string).

    `zone` is in the key because equal instants in other zones are written differently.
    """
    received = received_at if zone is not None else received_at.replace(tzinfo=UTC)
    received = received.replace(microsecond=received.microsecond // 1000 * 1000)
    return received, format_time(received)
