"""One event -> its warehouse rows and merge rule: RudderStack's transformer, provider postgres.

Pure (spec/warehouse.md §1.1-1.2, §2.1, §5.1). No `users` row and no `uuid_ts`: the warehouse
computes users from identifies (§4) and stamps uuid_ts at load.
"""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime
from typing import Any, NamedTuple

from loader.errors import LoaderError
from loader.naming import column_name, event_table_name, transform_name
from loader.schema import ArrayText, infer, js_number_text, json_text, valid_timestamp
from loader.types import ColumnType, Event

__all__ = ["MAX_COLUMNS", "MergeRule", "Row", "TooManyColumns", "Transformed", "transform"]

MAX_COLUMNS = 1600
"""WH_MAX_COLUMNS_IN_EVENT of the Go port (§1.3), uuid_ts counted."""


class Row(NamedTuple):
    table: str
    """Final name: tracks, identifies, pages, screens, groups, aliases or the event table."""
    data: dict[str, Any]
    """Column -> value; datetimes as normalized ISO strings, arrays as ArrayText (JSON)."""
    types: dict[str, ColumnType]
    """Column -> the type of this row's value."""


class MergeRule(NamedTuple):
    """One `rudder_identity_merge_rules` row (§5.1); property 2 is None when blank."""

    type1: str
    value1: str
    type2: str | None
    value2: str | None


class Transformed(NamedTuple):
    rows: list[Row]
    merge_rule: MergeRule | None


class TooManyColumns(LoaderError):
    """An event would give a row more than MAX_COLUMNS columns; RudderStack rejects it too."""

    def __init__(self, message_id: Any, count: int) -> None:
        self.message_id, self.count = message_id, count
        super().__init__(
            f"Event `{message_id}`: Too many columns outputted from the event ({count}, the "
            f"limit is {MAX_COLUMNS} with uuid_ts). Send fewer or less nested properties."
        )


# §1.1, in the order WHDefaultConfig.js applies them.
DEFAULT_RULES = (
    "id",
    "anonymous_id",
    "user_id",
    "sent_at",
    "timestamp",
    "received_at",
    "original_timestamp",
    "channel",
    "context_ip",
    "context_request_ip",
    "context_passed_ip",
)
# §2.1 "Reserved columns": a user key whose column is a rule column of its call is dropped.
_RULE_COLUMNS: dict[str, frozenset[str]] = {
    "track": frozenset((*DEFAULT_RULES, "event_text", "record_id")),
    "identify": frozenset(DEFAULT_RULES),
    "page": frozenset((*DEFAULT_RULES, "name")),
    "screen": frozenset((*DEFAULT_RULES, "name")),
    "group": frozenset((*DEFAULT_RULES, "group_id")),
    "alias": frozenset((*DEFAULT_RULES, "previous_id")),
}
# §1.2: the sections flattened into each call's main row, in order (a later one wins).
_SECTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "track": (("context", "context_"),),
    "identify": (("userProperties", ""), ("traits", ""), ("context", "context_")),
    "page": (("properties", ""), ("context", "context_")),
    "screen": (("properties", ""), ("context", "context_")),
    "group": (("traits", ""), ("context", "context_")),
    "alias": (("traits", ""), ("context", "context_")),
}
_TABLES = {
    "identify": "identifies",
    "page": "pages",
    "screen": "screens",
    "group": "groups",
    "alias": "aliases",
}
_TIMESTAMP_START = "0123456789+-"
_JSON_PATH_PREFIXES = ("track.", "identify.", "page.", "screen.", "alias.", "group.", "extract.")
_CACHE_LIMIT = 100_000
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

JsonPaths = tuple[dict[str, int], dict[str, int]]
"""(legacy keys, prefixed keys): underscore-joined raw path -> its depth (T keysFromJsonPaths)."""


class _Prefixes(dict[str, "_Columns"]):
    """Raw path prefix ("", "context_", "context_page_", ...) -> its column cache, per call type.

    Bounded: past _CACHE_LIMIT cached keys in all, everything is dropped and rebuilt.
    """

    def __init__(self, rules: frozenset[str]) -> None:
        super().__init__()
        self.rules = rules
        self.size = 0

    def __missing__(self, prefix: str) -> _Columns:
        columns = self[prefix] = _Columns(prefix, self)
        return columns

    def grew(self) -> None:
        self.size += 1
        if self.size > _CACHE_LIMIT:
            for columns in self.values():
                columns.clear()
            self.clear()
            self.size = 0


class _Columns(dict[str, str]):
    """Key -> column under one prefix; "" when the key is dropped (§2.1).

    Dropped: the name converts to nothing, or to a rule column of the call ("Reserved columns").
    """

    def __init__(self, prefix: str, owner: _Prefixes) -> None:
        super().__init__()
        self.prefix, self.owner = prefix, owner

    def __missing__(self, key: str) -> str:
        column = column_name(self.prefix + key) or ""
        if column in self.owner.rules:
            column = ""
        self.owner.grew()
        self[key] = column
        return column


_COLUMNS = {kind: _Prefixes(rules) for kind, rules in _RULE_COLUMNS.items()}


def transform(event: Event) -> Transformed:
    """The rows (in RudderStack's order) and the merge rule of one validated, enriched event.

    Raises TooManyColumns for a row over MAX_COLUMNS columns.
    """
    kind = str(event.get("type", "")).lower()
    if kind == "merge":
        return Transformed([], _merge_rule(event, kind))
    names = _COLUMNS.get(kind)
    if names is None:
        raise ValueError(f"Unknown event type: {kind!r}")  # spec.validate lets none through
    paths = _json_paths(event)
    data: dict[str, Any] = {}
    types: dict[str, ColumnType] = {}
    for field, prefix in _SECTIONS[kind]:
        _section(event.get(field), prefix, f"{kind}_{field}_", data, types, names, paths)
    if kind == "track":
        _rule(data, types, "event_text", event.get("event"))
        _default_rules(event, data, types)
        return _track(event, data, types, names, paths)
    _default_rules(event, data, types)
    if kind == "page" or kind == "screen":
        name = event.get("name")
        properties = event.get("properties")
        if _blank(name) and type(properties) is dict:
            name = properties.get("name")
        _rule(data, types, "name", name)
    elif kind == "group":
        _rule(data, types, "group_id", event.get("groupId"))
    elif kind == "alias":
        _rule(data, types, "previous_id", event.get("previousId"))
    _check_width(event, data)
    return Transformed([Row(_TABLES[kind], data, types)], _merge_rule(event, kind))


def _track(
    event: Event,
    common: dict[str, Any],
    common_types: dict[str, ColumnType],
    names: _Prefixes,
    paths: JsonPaths | None,
) -> Transformed:
    """tracks (the common columns), then the event table: properties, userProperties, common."""
    text = common.get("event_text")
    # transformTableName of the event_text column: a timestamp-like event was normalized there.
    source = "" if text is None else text if type(text) is str else _stringify(text)
    common["event"] = transform_name(source)
    common_types["event"] = "string"
    _check_width(event, common)
    rows = [Row("tracks", common, common_types)]
    table = event_table_name(source) if common["event"].strip() else None
    if table is None:
        return Transformed(rows, None)
    data: dict[str, Any] = {}
    types: dict[str, ColumnType] = {}
    _section(event.get("properties"), "", "track_properties_", data, types, names, paths)
    _section(event.get("userProperties"), "", "track_userProperties_", data, types, names, paths)
    data.update(common)
    types.update(common_types)
    _check_width(event, data)
    rows.append(Row(table, data, types))
    return Transformed(rows, _merge_rule(event, "track"))


def _default_rules(event: Event, data: dict[str, Any], types: dict[str, ColumnType]) -> None:
    """§1.1 in WHDefaultConfig.js order; each overwrites (or removes) what a user key wrote."""
    message_id = event.get("messageId")
    if _blank(message_id):
        message_id = f"auto-{uuid.uuid4()}"  # enrich always sets one
    _rule(data, types, "id", message_id)
    _rule(data, types, "anonymous_id", event.get("anonymousId"))
    _rule(data, types, "user_id", event.get("userId"))
    _rule(data, types, "sent_at", event.get("sentAt"))
    _rule(data, types, "timestamp", event.get("timestamp"))
    received_at = event.get("receivedAt")
    received_at = valid_timestamp(received_at) if type(received_at) is str else None
    if received_at is None:  # enrich always sets a valid one; T falls back to now
        received_at = datetime.now(UTC).isoformat(timespec="milliseconds")[:23] + "Z"
    data["received_at"], types["received_at"] = received_at, "datetime"
    _rule(data, types, "original_timestamp", event.get("originalTimestamp"))
    _rule(data, types, "channel", event.get("channel"))
    context = event.get("context")
    passed_ip = context.get("ip") if type(context) is dict else None
    request_ip = event.get("request_ip")
    _rule(data, types, "context_ip", request_ip if _blank(passed_ip) else passed_ip)
    _rule(data, types, "context_request_ip", request_ip)
    _rule(data, types, "context_passed_ip", passed_ip)


def _rule(data: dict[str, Any], types: dict[str, ColumnType], column: str, value: Any) -> None:
    """Set a rule column from a non-blank scalar, else remove it (T setDataFromColumnMapping...)."""
    kind = type(value)
    if kind is str:
        if value:
            if value[0] in _TIMESTAMP_START and (iso := valid_timestamp(value)) is not None:
                data[column], types[column] = iso, "datetime"
            else:
                data[column], types[column] = value, "string"
            return
    elif value is not None and kind is not dict and kind is not list:
        typed = infer(value)
        if typed is not None:
            types[column], data[column] = typed
            return
    data.pop(column, None)
    types.pop(column, None)


def _section(
    obj: Any,
    prefix: str,
    complete: str,
    data: dict[str, Any],
    types: dict[str, ColumnType],
    names: _Prefixes,
    paths: JsonPaths | None,
) -> None:
    """Flatten one section (context, properties, traits, userProperties) into a row (§2.1).

    `prefix` starts column keys ("context_" or ""); `complete` is T's completePrefix
    `<type>_<section>_` for the string-like and JSON-path rules. When two keys of the section
    write the same column, the section is walked again in RudderStack's key order (the gateway
    sorts keys, JS puts integer-like ones first) so that the same key wins.
    """
    if type(obj) is dict and obj and _walk(obj, prefix, complete, 0, 2, data, types, names, paths):
        _walk(obj, prefix, complete, 0, 2, data, types, names, paths, ordered=True)


def _walk(
    obj: dict[str, Any],
    prefix: str,
    complete: str,
    level: int,
    complete_level: int,
    data: dict[str, Any],
    types: dict[str, ColumnType],
    names: _Prefixes,
    paths: JsonPaths | None,
    ordered: bool = False,
) -> bool:
    """T setDataFromInputAndComputeColumnTypes; True if a column was written twice."""
    if (complete.endswith("context_traits_") or complete == "group_traits_") and _string_like(obj):
        if prefix == "context_traits_":  # context.traits {"0":"f","1":"o"} -> context_traits
            column = names[prefix][""]
            typed = infer("".join(obj[str(i)] for i in sorted(map(int, obj))))
            if column and typed is not None:
                collided = column in data
                types[column], data[column] = typed
                return collided
        return False
    collided = False
    columns = names[prefix]
    for key, value in _js_items(obj) if ordered else obj.items():
        if paths is not None and _is_json_path(paths, complete, prefix, key, level, complete_level):
            if _blank(value):
                continue
            column = columns[key]
            if column:
                collided = collided or column in data
                data[column], types[column] = json_text(value), "json"
            continue
        kind = type(value)
        column_type: ColumnType
        if kind is str:
            if not value:
                continue
            column = columns[key]
            if not column:
                continue
            if value[0] in _TIMESTAMP_START and (iso := valid_timestamp(value)) is not None:
                value, column_type = iso, "datetime"
            else:
                column_type = "string"
        elif kind is dict:
            if value and _walk(
                value,
                f"{prefix}{key}_",
                f"{complete}{key}_",
                level + 1,
                complete_level + 1,
                data,
                types,
                names,
                paths,
                ordered,
            ):
                collided = True
            continue
        elif kind is int:
            column = columns[key]
            if not column:
                continue
            if _INT64_MIN <= value <= _INT64_MAX:
                column_type = "int"
            else:  # beyond BIGINT: schema.infer's rule
                value, column_type = float(value), "float"
        elif kind is float:
            column = columns[key]
            if not column:
                continue
            if value.is_integer() and _INT64_MIN <= value <= _INT64_MAX:
                value, column_type = int(value), "int"
            else:
                column_type = "float"
        elif kind is bool:
            column = columns[key]
            if not column:
                continue
            column_type = "boolean"
        elif value is None:
            continue
        elif kind is list:
            if not value or _blank(value):
                continue
            column = columns[key]
            if not column:
                continue
            value, column_type = ArrayText(json_text(value)), "string"
        else:
            typed = infer(value)
            column = columns[key]
            if typed is None or not column:
                continue
            column_type, value = typed
        if column in data:
            collided = True
        data[column] = value
        types[column] = column_type
    return collided


def _js_items(obj: dict[str, Any]) -> list[tuple[str, Any]]:
    """RudderStack's key order: integer-like keys ascending, then the rest sorted (Go's order)."""
    indexes = sorted((int(key), key) for key in obj if _array_index(key))
    rest = sorted(key for key in obj if not _array_index(key))
    return [(key, obj[key]) for _, key in indexes] + [(key, obj[key]) for key in rest]


def _array_index(key: str) -> bool:
    """A JS array index: canonical decimal digits below 2**32 - 1."""
    return (
        key.isascii()
        and key.isdigit()
        and (key == "0" or key[0] != "0")
        and int(key) < 4_294_967_295
    )


def _string_like(obj: dict[str, Any]) -> bool:
    """T isStringLikeObject: keys 0..n-1 or 1..n, each value one UTF-16 unit of text."""
    if not obj:
        return False
    numbers = set()
    for key, value in obj.items():
        if not (key.isascii() and key.isdigit()):
            return False
        if type(value) is not str or len(value) != 1 or ord(value) > 0xFFFF:
            return False
        numbers.add(int(key))
    low, high = min(numbers), max(numbers)
    return (
        low in (0, 1)
        and high - low + 1 == len(obj)
        and all(str(n) in obj for n in range(low, high + 1))
    )


def _blank(value: Any) -> bool:
    """lodash isEmpty(toString(value)): None, "", [], [""], [[]], [[""]] ... (§2.1)."""
    if value is None or value == "":
        return True
    if type(value) is list:
        return not value or (len(value) == 1 and value[0] is not None and _blank(value[0]))
    return False


def _is_json_path(
    paths: JsonPaths, complete: str, prefix: str, key: str, level: int, complete_level: int
) -> bool:
    legacy, prefixed = paths
    if legacy and complete.startswith("track_") and legacy.get(prefix + key) == level:
        return True
    return bool(prefixed) and prefixed.get(complete + key) == complete_level


def _json_paths(event: Event) -> JsonPaths | None:
    """jsonPaths of integrations.DATA_WAREHOUSE and integrations.POSTGRES options (§2.1)."""
    integrations = event.get("integrations")
    if type(integrations) is not dict or not integrations:
        return None
    found: list[str] = []
    for name in ("DATA_WAREHOUSE", "POSTGRES"):
        options = integrations.get(name)
        options = options.get("options") if type(options) is dict else None
        listed = options.get("jsonPaths") if type(options) is dict else None
        if type(listed) is list:
            found.extend(path for path in listed if type(path) is str)
    return _parse_json_paths(tuple(found)) if found else None


@functools.lru_cache(maxsize=256)
def _parse_json_paths(listed: tuple[str, ...]) -> JsonPaths | None:
    """T keysFromJsonPaths: `a.b` -> legacy {"a_b": 1}; `track.properties.a` -> {..: 2}."""
    legacy: dict[str, int] = {}
    prefixed: dict[str, int] = {}
    for path in listed:
        trimmed = path.strip()
        if not trimmed:
            continue
        parts = trimmed.split(".")
        target = prefixed if trimmed.startswith(_JSON_PATH_PREFIXES) else legacy
        target["_".join(parts)] = len(parts) - 1
    return (legacy, prefixed) if legacy or prefixed else None


def _check_width(event: Event, data: dict[str, Any]) -> None:
    """T getColumns: uuid_ts plus the row's columns; rudder-sources rows are exempt."""
    count = len(data) + ("uuid_ts" not in data)
    if count > MAX_COLUMNS and data.get("channel") != "sources":
        raise TooManyColumns(event.get("messageId"), count)


def _merge_rule(event: Event, kind: str) -> MergeRule | None:
    """§5.1: (anonymous_id, user_id), (user_id) alone, alias's two user ids, or merge's pair."""
    second: tuple[Any, Any] | None
    if kind == "merge":
        pair = event.get("mergeProperties")
        if type(pair) is not list or len(pair) != 2 or not all(type(p) is dict for p in pair):
            return None  # spec.validate rejects these
        first = (pair[0].get("type"), pair[0].get("value"))
        second = (pair[1].get("type"), pair[1].get("value"))
    elif kind == "alias":
        first, second = ("user_id", event.get("userId")), ("user_id", event.get("previousId"))
    elif _blank(event.get("anonymousId")):
        first, second = ("user_id", event.get("userId")), None
    else:
        first, second = ("anonymous_id", event.get("anonymousId")), ("user_id", event.get("userId"))
    if _blank(first[0]) or _blank(first[1]):
        return None
    if second is None or _blank(second[0]) or _blank(second[1]):
        return MergeRule(_stringify(first[0]), _stringify(first[1]), None, None)
    return MergeRule(
        _stringify(first[0]), _stringify(first[1]), _stringify(second[0]), _stringify(second[1])
    )


def _stringify(value: Any) -> str:
    """rudder-go-kit stringify.Any: a string as is, anything else as JSON (`123`, `true`)."""
    if type(value) is str:
        return value
    if type(value) is float:
        return js_number_text(value)
    return json_text(value)
