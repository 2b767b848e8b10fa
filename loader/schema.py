"""Column types of spec/warehouse.md §3: inference, JS-exact timestamps, coercion and discards.

Pure. Values come from flatten; which tables and columns exist is the warehouse's business.
"""

from __future__ import annotations

import functools
import json
import math
import re
from datetime import datetime, timedelta
from typing import Any

import orjson

from loader.types import ColumnType

__all__ = [
    "ArrayText",
    "coerce",
    "discard_text",
    "go_text",
    "infer",
    "js_number_text",
    "json_text",
    "merge_type",
    "valid_timestamp",
]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EPOCH = datetime(1970, 1, 1)
_DAY_MS = 86_400_000


class ArrayText(str):
    """An array's JSON text (§3.2): a `string` value that a `json` column keeps as is (§3.4)."""

    __slots__ = ()


def infer(value: Any) -> tuple[ColumnType, Any] | None:
    """(type, value to store) of a non-object JSON value (§3.1); None: no column.

    bool before int; an integral float is an int (JS Number.isInteger) unless it overflows
    BIGINT, then it stays a float; NaN and infinities are floats. A timestamp string is
    rewritten to UTC milliseconds; an array becomes its compact JSON text.
    """
    kind = type(value)
    if kind is str:
        iso = valid_timestamp(value)
        return ("string", value) if iso is None else ("datetime", iso)
    if kind is bool:
        return "boolean", value
    if kind is int:
        return ("int", value) if _INT64_MIN <= value <= _INT64_MAX else ("float", float(value))
    if kind is float:
        if value.is_integer() and _INT64_MIN <= value <= _INT64_MAX:
            return "int", int(value)
        return "float", value
    if kind is list:
        return "string", ArrayText(json_text(value))
    if value is None:
        return None
    if isinstance(value, bool):  # subclasses, rare: same rules as their base type
        return "boolean", bool(value)
    if isinstance(value, int):
        return infer(int(value))
    if isinstance(value, float):
        return infer(float(value))
    if isinstance(value, str):
        return infer(str(value))
    if isinstance(value, list | tuple):
        return infer(list(value))
    raise TypeError(f"infer() takes a JSON scalar or array, not {kind.__name__}")


def merge_type(existing: ColumnType | None, new: ColumnType) -> ColumnType:
    """The column type after seeing `new`: the first type seen wins (§3.3)."""
    return new if existing is None else existing


def coerce(value: Any, row_type: ColumnType, table_type: ColumnType) -> tuple[Any, str | None]:
    """Fit a `row_type` value into a `table_type` column (§3.4, S worker.go HandleSchemaChange).

    (value to store, None), or (None, reason) for a discard. Values are as infer() made them:
    datetimes are ISO strings, arrays are ArrayText.
    """
    if row_type == table_type:
        return value, None
    if table_type == "string":
        if row_type == "json":
            return value, None
        return go_text(value), None
    if table_type == "float":
        if row_type == "int":
            return float(value), None
    elif table_type == "int":
        if row_type == "float" and math.isfinite(value) and _INT64_MIN <= value < 2.0**63:
            return int(value), None  # truncated; what BIGINT cannot hold is discarded
    elif table_type == "json":
        if row_type in ("int", "float", "boolean"):
            if type(value) is not float or math.isfinite(value):  # NaN is no JSON
                return go_text(value), None
        elif type(value) is ArrayText:
            return value, None
        else:
            return json_text(go_text(value)), None
    return None, f"incompatible schema conversion from {table_type} to {row_type}"


def discard_text(value: Any) -> str:
    """`rudder_discards.column_value`: Go's fmt.Sprint of the original value (§3.4)."""
    return go_text(value)


def go_text(value: Any) -> str:
    """Go's fmt.Sprint of a JSON value: `true`, `50`, `1.5`, `1e+06`, `[a b]`, `map[k:v]`."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return _go_float(value)
    if value is None:
        return "<nil>"
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_text(item) for item in value) + "]"
    if isinstance(value, dict):
        inner = " ".join(f"{key}:{go_text(value[key])}" for key in sorted(value))
        return f"map[{inner}]"
    return str(value)


def json_text(value: Any) -> str:
    """Compact JSON, keys sorted as Go marshals them (S worker.go writes arrays that way).

    Non-ASCII is kept. orjson, or the json module past orjson's 64-bit integers.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _digits(value: float) -> tuple[str, int]:
    """Shortest round-trip digits of a finite non-zero |value| and the decimal point position.

    `value == 0.<digits> * 10**point`; Python's repr, Go's and JS's shortest forms agree.
    """
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + (int(exponent) if exponent else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    return stripped.rstrip("0"), point


def _go_float(value: float) -> str:
    """fmt's %v of a float64: strconv 'g', shortest digits, %e when the exponent is < -4 or >= 6."""
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    digits, point = _digits(value)
    sign = "-" if value < 0 else ""
    exponent = point - 1
    if exponent < -4 or exponent >= 6:  # ftoa.go: "use precision 6 for this decision"
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    return sign + _fixed(digits, point)


def js_number_text(value: float) -> str:
    """JS Number#toString (and JSON.stringify, Go's JSON): `3`, `1.5`, `1e+21`, `1e-7`."""
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value == 0:
        return "0"
    digits, point = _digits(value)
    sign = "-" if value < 0 else ""
    if -6 < point <= 21:
        return sign + _fixed(digits, point)
    exponent = point - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent)}"


def _fixed(digits: str, point: int) -> str:
    if point <= 0:
        return "0." + "0" * -point + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]


# ---- valid timestamps (§3.1): T util.js validTimestamp = regex + V8's Date.parse + range ----

# JS `\s` (no `u` flag); Python's differs (\x1c-\x1f, \x85 in, \ufeff out).
_JS_SPACE = "\t\n\x0b\x0c\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_TIMESTAMP = re.compile(
    r"[+-]?[0-9]{4}-(?:0[1-9]|1[0-2])-(?:[12][0-9]|0[1-9]|3[01])"
    rf"(?:[T{_JS_SPACE}](?:(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-9]+)?)?"
    r"(?::[0-5][0-9](?:\.[0-9]+)?)?(?:[zZ]|[+-](?:[01][0-9]|2[0-3]):?(?:[0-5][0-9])?)?)?"
)
# What SDKs and enrich send: already the normalized form, when the day exists in every month.
_CANONICAL = re.compile(
    r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"\.[0-9]{3}Z"
)
# V8's date tokenizer: U+2028/U+2029 are line terminators, not white space, so they read as
# letters of a garbage word.
_V8_SPACE = "\t\n\x0b\x0c\r \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000\ufeff"
_TOKEN = re.compile(rf"([0-9]+)|([-+:.])|([A-Za-z\u2028\u2029]+)|([{_V8_SPACE}]+)")
_MAX_GO_LENGTH = 40  # S utils.go: len("2012-08-03 18:31:59.257000000 +00:00 UTC"), in bytes
_MIN_MS = -62_135_596_800_000  # Date.parse("0001-01-01T00:00:00Z")
_MAX_MS = 253_402_300_799_999  # Date.parse("9999-12-31T23:59:59.999Z")


def valid_timestamp(text: str) -> str | None:
    """`new Date(text).toISOString()` if T validTimestamp accepts `text` (§3.1), else None.

    The ISO-like regex, then V8's Date.parse (TZ=UTC) including its legacy fallback, then the
    range 0001-01-01 .. 9999-12-31T23:59:59.999Z; also at most 40 bytes, as the Go port.
    """
    if len(text) < 10 or text[0] not in "0123456789+-" or "-" not in text[4:6]:
        return None
    if len(text) == 24 and text[:4] != "0000" and _CANONICAL.fullmatch(text):
        return text
    if len(text) > _MAX_GO_LENGTH or (not text.isascii() and len(text.encode()) > _MAX_GO_LENGTH):
        return None
    if _TIMESTAMP.fullmatch(text) is None:
        return None
    return _parse_timestamp(text)


@functools.lru_cache(maxsize=1024)
def _parse_timestamp(text: str) -> str | None:
    ms = _DateParser(text).parse()
    if ms is None or not _MIN_MS <= ms <= _MAX_MS:
        return None
    moment = _EPOCH + timedelta(milliseconds=ms)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}Z"
    )


class _Token:
    __slots__ = ("kind", "length", "value")

    def __init__(self, kind: str, value: int | str = 0, length: int = 0) -> None:
        self.kind, self.value, self.length = kind, value, length

    def number(self, length: int | None = None) -> bool:
        return self.kind == "n" and (length is None or self.length == length)

    def symbol(self, char: str) -> bool:
        return self.kind == "s" and self.value == char

    def sign(self) -> bool:
        return self.kind == "s" and self.value in ("+", "-")

    def zone_z(self) -> bool:
        return self.kind == "k" and self.value == "z"


def _tokens(text: str) -> list[_Token]:
    """V8 DateStringTokenizer over the regex's alphabet.

    A number's value is its first 9 digits after the leading zeros; its length counts them all.
    """
    out = []
    for number, symbol, word, _space in _TOKEN.findall(text):
        if number:
            out.append(_Token("n", int(number.lstrip("0")[:9] or "0"), len(number)))
        elif symbol:
            out.append(_Token("s", symbol))
        elif word:  # V8's keyword table, as far as T and Z go; other words are garbage
            out.append(_Token("k", word.lower() if word in ("T", "Z", "z") else "?"))
        else:
            out.append(_Token("w"))
    out.append(_Token("e"))
    return out


def _milliseconds(token: _Token) -> int:
    """V8 ReadMilliseconds: the first three digits of a fraction."""
    number, length = int(token.value), token.length
    if length == 1:
        return number * 100
    if length == 2:
        return number * 10
    if length > 3:
        number //= 10 ** (min(length, 9) - 3)
    return number


class _DateParser:
    """V8 src/date/dateparser-inl.h DateParser::Parse (ES5 ISO, then the legacy parser).

    Only the branches reachable from the timestamp regex's alphabet are ported. Local time is
    UTC, as RudderStack runs it.
    """

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0
        self.day: list[int] = []
        self.time: list[int] = []
        self.iso = False
        self.tz_sign: int | None = None
        self.tz_hour: int | None = None
        self.tz_minute: int | None = None

    def peek(self) -> _Token:
        return self.tokens[self.at]

    def next(self) -> _Token:
        token = self.tokens[self.at]
        if token.kind != "e":
            self.at += 1
        return token

    def skip(self, char: str) -> bool:
        if self.peek().symbol(char):
            self.at += 1
            return True
        return False

    def time_add(self, n: int) -> bool:
        if len(self.time) >= 4:
            return False
        self.time.append(n)
        return True

    def time_add_final(self, n: int) -> bool:
        if not self.time_add(n):
            return False
        self.time.extend([0] * (4 - len(self.time)))
        return True

    def time_expecting(self, n: int) -> bool:
        index = len(self.time)
        return (index in (1, 2) and 0 <= n <= 59) or (index == 3 and 0 <= n <= 999)

    def tz_set(self, hours: int) -> None:
        self.tz_sign, self.tz_hour, self.tz_minute = (-1 if hours < 0 else 1), abs(hours), 0

    def parse(self) -> int | None:
        unhandled = self.es5()
        if unhandled is None:
            return None
        if not self.legacy(unhandled):
            return None
        return self.write()

    def es5(self) -> _Token | None:
        """ParseES5DateTime: the token to hand to the legacy parser, or None (invalid)."""
        if self.peek().sign():
            sign = self.next()
            if not self.peek().number(6):
                return sign
            year = int(self.next().value)
            if sign.value == "-" and year == 0:
                return None
            self.day.append(-year if sign.value == "-" else year)
        elif self.peek().number(4):
            self.day.append(int(self.next().value))
        else:
            return self.next()
        if self.skip("-"):
            if not (self.peek().number(2) and 1 <= int(self.peek().value) <= 12):
                return self.next()
            self.day.append(int(self.next().value))
            if self.skip("-"):
                if not (self.peek().number(2) and 1 <= int(self.peek().value) <= 31):
                    return self.next()
                self.day.append(int(self.next().value))
        if not (self.peek().kind == "k" and self.peek().value == "t"):
            if self.peek().kind != "e":
                return self.next()
        else:
            self.next()
            if not (self.peek().number(2) and 0 <= int(self.peek().value) <= 24):
                return None
            hour_is_24 = self.peek().value == 24
            self.time.append(int(self.next().value))
            if not self.skip(":"):
                return None
            if not self.two_digits(0, 59, hour_is_24):
                return None
            if self.skip(":"):
                if not self.two_digits(0, 59, hour_is_24):
                    return None
                if self.skip("."):
                    if not self.peek().number() or (hour_is_24 and int(self.peek().value) > 0):
                        return None
                    self.time.append(_milliseconds(self.next()))
            if self.peek().zone_z():
                self.next()
                self.tz_set(0)
            elif self.peek().sign():
                self.tz_sign = 1 if self.next().value == "+" else -1
                if self.peek().number(4):
                    hour, minute = divmod(int(self.next().value), 100)
                    if not (0 <= hour <= 23 and 0 <= minute <= 59):
                        return None
                    self.tz_hour, self.tz_minute = hour, minute
                else:
                    if not (self.peek().number(2) and 0 <= int(self.peek().value) <= 23):
                        return None
                    self.tz_hour = int(self.next().value)
                    if not self.skip(":"):
                        return None
                    if not (self.peek().number(2) and 0 <= int(self.peek().value) <= 59):
                        return None
                    self.tz_minute = int(self.next().value)
            if self.peek().kind != "e":
                return None
        if self.tz_sign is None and not self.time:
            self.tz_set(0)
        self.iso = True
        return self.tokens[-1]

    def two_digits(self, low: int, high: int, hour_is_24: bool) -> bool:
        token = self.peek()
        n = int(token.value)
        if not (token.number(2) and low <= n <= high) or (hour_is_24 and n > 0):
            return False
        self.time.append(int(self.next().value))
        return True

    def legacy(self, token: _Token) -> bool:
        """The legacy loop of DateParser::Parse over what ES5 left; False when invalid."""
        has_read_number = bool(self.day)
        while token.kind != "e":
            if token.kind == "n":
                has_read_number = True
                n = int(token.value)
                if self.skip(":"):
                    if self.skip(":"):
                        if self.time:
                            return False
                        self.time += [n, 0]
                    else:
                        if not self.time_add(n):
                            return False
                        if self.peek().symbol("."):
                            self.next()
                elif self.skip(".") and self.time_expecting(n):
                    self.time_add(n)
                    if not self.peek().number():
                        return False
                    self.time_add_final(_milliseconds(self.next()))
                elif self.tz_hour is not None and self.tz_minute is None and 0 <= n <= 59:
                    self.tz_minute = n
                elif self.time_expecting(n):
                    self.time_add_final(n)
                    after = self.peek()
                    if not (after.kind in ("e", "w") or after.zone_z() or after.sign()):
                        return False
                else:
                    if len(self.day) >= 3:
                        return False
                    self.day.append(n)
                    self.skip("-")
            elif token.kind == "k":
                if token.value == "z" and has_read_number:
                    self.tz_set(0)
                elif has_read_number or self.peek().number():
                    return False  # garbage words (a `T` here) after a number
            elif token.sign() and ((self.tz_hour == 0 and self.tz_minute == 0) or self.time):
                self.tz_sign = 1 if token.value == "+" else -1
                n = length = 0
                if self.peek().number():
                    number = self.next()
                    n, length = int(number.value), number.length
                has_read_number = True
                if self.peek().symbol(":"):
                    self.tz_hour, self.tz_minute = n, None
                elif length in (1, 2):
                    self.tz_hour, self.tz_minute = n, 0
                elif length in (3, 4):
                    self.tz_hour, self.tz_minute = divmod(n, 100)
                else:
                    return False
            elif token.sign() and has_read_number:
                return False
            token = self.next()
        return True

    def write(self) -> int | None:
        """DayComposer/TimeComposer/TimeZoneComposer::Write and MakeDate, in ms since 1970."""
        if not self.day:
            return None
        comp = self.day + [1] * (3 - len(self.day))
        if self.iso or not 1 <= comp[0] <= 31:
            year, month, day = comp
        else:
            month, day, year = comp
        if not self.iso:
            if 0 <= year <= 49:
                year += 2000
            elif 50 <= year <= 99:
                year += 1900
        if not (1 <= month <= 12 and 1 <= day <= 31):
            return None
        hour, minute, second, milli = self.time + [0] * (4 - len(self.time))
        if not (0 <= hour <= 23 and minute <= 59 and second <= 59 and milli <= 999) and (
            hour != 24 or minute or second or milli
        ):
            return None
        offset = 0
        if self.tz_sign is not None:
            offset = self.tz_sign * ((self.tz_hour or 0) * 3600 + (self.tz_minute or 0) * 60)
        days = _days_from_civil(year, month, 1) + day - 1
        return days * _DAY_MS + ((hour * 60 + minute) * 60 + second) * 1000 + milli - offset * 1000


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (any year; H. Hinnant's algorithm)."""
    year -= month <= 2
    era = (year if year >= 0 else year - 399) // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468
