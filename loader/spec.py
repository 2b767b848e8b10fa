"""Request body -> validated events: the rejection rules of spec/http-api.md, nothing else.

Pure: no I/O, no clock. What the server adds to an accepted event lives in `enrich.py`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any, NamedTuple, get_args

import orjson

from loader.errors import InvalidEvent, InvalidJSON, RequestTooLarge
from loader.settings import MAX_EVENT_BYTES
from loader.types import CALL_TYPES, CallType, Event

# The fixed starts of the messages (spec/http-api.md, error table).
INVALID_EVENT = "Invalid event"
EMPTY_BATCH = "Empty batch payload"
INVALID_TYPE = "Invalid event type"
NO_IDENTIFIER = "Request neither has anonymousId nor userId"
MISSING_FIELD = "Missing required field"

_TYPE_NAMES = ", ".join(get_args(CallType))

# rudder-go-kit sanitize.invisibleRunes: dropped on top of what unicode.IsPrint rejects.
_INVISIBLE = frozenset(
    map(
        chr,
        (
            *(0x0000, 0x0009, 0x00A0, 0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5),
            *(0x180E, *range(0x2000, 0x2010), 0x202F, 0x205F, *range(0x2060, 0x2065)),
            *(*range(0x206A, 0x2070), 0x3000, 0x2800, 0x3164, 0xFEFF, 0xFFA0),
        ),
    )
)
_INVISIBLE_RE = re.compile("[" + "".join(map(re.escape, sorted(_INVISIBLE))) + "]")


class Payload(NamedTuple):
    events: list[Event]
    sent_at: str | None
    """The batch-level `sentAt` when it is a string (None for single calls)."""


def parse_request(body: bytes, call_type: CallType | None) -> Payload:
    """Decode and validate one request; `call_type` None means `/v1/batch` (and beacon).

    All-or-nothing: the first bad event raises and no event is returned.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(str(exc)) from None
    if call_type is not None:
        if not isinstance(doc, dict):
            raise InvalidEvent(INVALID_EVENT, None, "the body must be a JSON object")
        doc["type"] = call_type
        return Payload([validate(doc, None)], None)
    if not isinstance(doc, dict):
        raise InvalidEvent(INVALID_EVENT, None, 'the body must be a JSON object {"batch": [...]}')
    batch = doc.get("batch")
    if batch is None or batch == []:
        what = _show(batch) if "batch" in doc else "missing"
        raise InvalidEvent(EMPTY_BATCH, None, f"`batch` is {what}; send at least one event")
    if not isinstance(batch, list):
        batch = [batch]  # RudderStack (gjson) reads a lone object as a one-element batch
    sent_at = doc.get("sentAt")
    return Payload(
        [validate(raw, i) for i, raw in enumerate(batch)],
        sent_at if isinstance(sent_at, str) else None,
    )


def validate(raw: Any, index: int | None) -> Event:
    """Check one event against every rule, in the table's order; return it (type lower-cased).

    `index` is its position in the batch or file (None for a single call).
    """
    if not isinstance(raw, dict):
        raise InvalidEvent(
            INVALID_EVENT, index, f"an event must be a JSON object, got {_show(raw)}"
        )
    kind = raw.get("type")
    if not (isinstance(kind, str) and kind in CALL_TYPES):
        lower = kind.lower() if isinstance(kind, str) and kind.isascii() else ""
        if lower not in CALL_TYPES:
            what = _show(kind) if "type" in raw else "missing"
            raise InvalidEvent(INVALID_TYPE, index, f"`type` is {what}; use one of {_TYPE_NAMES}")
        raw["type"] = kind = lower
    if not (identifier(raw.get("userId")) or identifier(raw.get("anonymousId"))):
        raise InvalidEvent(
            NO_IDENTIFIER, index, "set a non-blank `userId` or `anonymousId` (string or number)"
        )
    check = _REQUIRED.get(kind)
    if check is not None and (problem := check(raw)) is not None:
        raise InvalidEvent(MISSING_FIELD, index, problem)
    try:  # one level deeper, as the spool stores it: the envelope must encode too
        size = len(orjson.dumps([raw])) - 2
    except orjson.JSONEncodeError as exc:  # nested past ~250 levels, or an int past 64 bits
        raise InvalidEvent(INVALID_EVENT, index, f"it cannot be stored as JSON ({exc})") from None
    if size > MAX_EVENT_BYTES:
        where = "the event" if index is None else f"the event at batch index {index}"
        raise RequestTooLarge(
            f"{where} is {size} bytes as JSON; the limit is {MAX_EVENT_BYTES} bytes per event"
        )
    return raw


def identifier(value: Any) -> str:
    """RudderStack's `TrimSpace(sanitize.Unicode(stringify.Any(value)))` (rudder-gateway.md §7).

    "" means absent. Numbers, booleans and objects count as present through their JSON text.
    """
    if isinstance(value, str):
        if value.isascii() and value.isprintable():  # the usual id: nothing to sanitize
            return value.strip(" ")
        text = value
    elif value is None:
        return ""
    else:
        text = _stringify(value)
    return sanitize_unicode(text).strip(" ")


def sanitize_unicode(s: str) -> str:
    """Drop runes Go's unicode.IsPrint rejects and the invisible ones; ASCII space is kept.

    Python's str.isprintable has the same definition as Go's IsPrint (L, M, N, P, S and U+0020).
    """
    if s.isprintable():
        return s if s.isascii() else _INVISIBLE_RE.sub("", s)
    return "".join([c for c in s if c.isprintable() and c not in _INVISIBLE])


def _stringify(value: Any) -> str:
    """Go's json.Marshal of a decoded JSON value: numbers are float64, map keys sorted."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value) if -(2**53) <= value <= 2**53 else _go_float(float(value))
    if isinstance(value, float):
        return _go_float(value)
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # not a JSON value: Go falls back to fmt.Sprint
        return str(value)


def _go_float(f: float) -> str:
    """strconv.AppendFloat as encoding/json calls it: fixed in [1e-6, 1e21), else exponent."""
    size = abs(f)
    if size == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    if 1e-6 <= size < 1e21:
        text = format(Decimal(repr(f)), "f")  # repr: the shortest digits, as Go prints them
        return text.rstrip("0").rstrip(".") if "." in text else text
    mantissa, _, exponent = repr(f).partition("e")
    if exponent.startswith("-0"):
        exponent = "-" + exponent[2:]
    return f"{mantissa}e{exponent}"


def _show(value: Any) -> str:
    """A value as short one-line JSON, for error messages."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:  # validate() called with a value that did not come from JSON
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _has_id(value: Any) -> bool:
    """A non-blank string or any number (not a boolean)."""
    if isinstance(value, str):
        return bool(identifier(value))
    return isinstance(value, int | float) and not isinstance(value, bool)


def _track(event: Event) -> str | None:
    name = event.get("event")
    if isinstance(name, str) and identifier(name):
        return None
    return "`event` (a track call needs the event's name as a non-blank string)"


def _group(event: Event) -> str | None:
    if _has_id(event.get("groupId")):
        return None
    return "`groupId` (a group call needs a non-blank string or number)"


def _alias(event: Event) -> str | None:
    if _has_id(event.get("previousId")):
        return None
    return "`previousId` (an alias call needs a non-blank string or number)"


def _merge(event: Event) -> str | None:
    props = event.get("mergeProperties")
    if not isinstance(props, list) or len(props) != 2:
        got = _show(props) if "mergeProperties" in event else "missing"
        return f"`mergeProperties` must be a list of exactly two {{type, value}} objects, got {got}"
    for i, prop in enumerate(props):
        if not isinstance(prop, dict):
            return f"`mergeProperties[{i}]` must be a {{type, value}} object, got {_show(prop)}"
        for key in ("type", "value"):
            if not _has_id(prop.get(key)):
                return f"`mergeProperties[{i}].{key}` must be a non-blank string or number"
    return None


_REQUIRED: dict[str, Callable[[Event], str | None]] = {
    "track": _track,
    "group": _group,
    "alias": _alias,
    "merge": _merge,
}
