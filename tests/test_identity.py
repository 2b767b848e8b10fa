"""Identity resolution (spec/warehouse.md §5, §1.4): merge rules -> rudder_id per component.

Warehouse tests drive the real Pipeline on one DuckDB file per module; each test gets a source
of its own, so its namespace (tables, rules, mappings) starts empty. Labels are random UUIDs:
tests compare partitions, and the survivor of a join with the smallest of the joined ids (§5.2).
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import networkx as nx  # type: ignore[import-untyped]
import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from loader.enrich import enrich
from loader.flatten import MergeRule
from loader.identity import Node, resolve
from loader.identity_commands import UnknownIdentifier
from loader.pipeline import Pipeline
from loader.settings import Settings
from loader.spool import Spool
from loader.types import Event
from tests.conftest import Server, basic, cli

RECEIVED = datetime(2024, 5, 1, 10, 0, 2, tzinfo=UTC)

Rule = tuple[str, str, str | None, str | None]
"""A rudder_identity_merge_rules row: (type1, value1, type2, value2)."""
Partition = frozenset[frozenset[Node]]


# -- events --------------------------------------------------------------------------------


def identify(user: Any = None, anon: Any = None, **extra: Any) -> Event:
    return _event("identify", user, anon, **extra)


def track(user: Any = None, anon: Any = None, **extra: Any) -> Event:
    return _event("track", user, anon, event="Product Viewed", **extra)


def page(user: Any = None, anon: Any = None, **extra: Any) -> Event:
    return _event("page", user, anon, name="Home", **extra)


def alias(user: Any, previous: Any, **extra: Any) -> Event:
    return _event("alias", user, None, previousId=previous, **extra)


def merge(a: tuple[Any, Any], b: tuple[Any, Any], **extra: Any) -> Event:
    """A merge call: the one event that links two arbitrary (type, value) nodes (§5.1)."""
    props = [{"type": a[0], "value": a[1]}, {"type": b[0], "value": b[1]}]
    return _event("merge", "merger", None, mergeProperties=props, **extra)


def _event(kind: str, user: Any, anon: Any, **extra: Any) -> Event:
    event: Event = {"type": kind, **extra}
    if user is not None:
        event["userId"] = user
    if anon is not None:
        event["anonymousId"] = anon
    return event


# -- the warehouse -------------------------------------------------------------------------


class Warehouse:
    """One real Pipeline on a DuckDB file; `namespace()` gives each test a source of its own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spool = Spool(settings.spool_dir)
        self.pipeline = Pipeline(settings)
        self.pipeline.open(create_default=True)
        self._names = itertools.count(1)

    def namespace(self) -> Namespace:
        name = f"identity_{next(self._names)}"
        source = self.pipeline.command("sources.add", {"name": name})
        return Namespace(self, name, source["namespace"])

    def close(self) -> None:
        self.pipeline.close()


class Namespace:
    """A source and its namespace: load events into it and read its identity tables."""

    def __init__(self, warehouse: Warehouse, source: str, namespace: str) -> None:
        self.warehouse = warehouse
        self.source = source
        self.name = namespace

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        return self.warehouse.pipeline.con

    def load(self, events: Iterable[Event]) -> None:
        """Spool the events as one sealed segment, as the HTTP side would, and drain it."""
        lines = [
            orjson.dumps(
                {
                    "source": self.source,
                    "event": enrich(
                        copy.deepcopy(e), received_at=RECEIVED, request_ip="1.2.3.4", sent_at=None
                    ),
                }
            )
            + b"\n"
            for e in events
        ]
        assert lines, "load() needs at least one event"
        failed = self.warehouse.settings.spool_dir / "failed"
        before = set(failed.iterdir())
        self.warehouse.spool.append(lines, len(lines))
        assert self.warehouse.spool.seal() is not None
        self.warehouse.pipeline.drain()
        assert set(failed.iterdir()) == before, "a segment failed to load"

    def rules(self) -> list[Rule]:
        """Every stored rule, duplicates kept (sorted for comparison)."""
        rows = self.con.execute(
            f'SELECT * FROM "{self.name}".rudder_identity_merge_rules'
        ).fetchall()
        return sorted(rows, key=repr)

    def mapping_rows(self) -> list[tuple[str, str, str, datetime]]:
        return self.con.execute(
            "SELECT merge_property_type, merge_property_value, rudder_id, updated_at "
            f'FROM "{self.name}".rudder_identity_mappings ORDER BY 1, 2, 3'
        ).fetchall()

    def mappings(self) -> dict[Node, str]:
        """(type, value) -> rudder_id; §1.4 allows one row per node, checked here."""
        rows = self.mapping_rows()
        found = {(kind, value): label for kind, value, label, _ in rows}
        assert len(found) == len(rows), f"a node has two mapping rows: {rows}"
        return found

    def updated(self) -> dict[Node, datetime]:
        return {(kind, value): at for kind, value, _, at in self.mapping_rows()}

    def command(self, name: str, **args: Any) -> Any:
        return self.warehouse.pipeline.command(name, {"source": self.source, **args})


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    root = tmp_path_factory.mktemp("identity")
    opened = Warehouse(Settings(database=root / "w.duckdb", spool_dir=root / "spool"))
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def ns(warehouse: Warehouse) -> Namespace:
    return warehouse.namespace()


# -- partitions and the invariants of §5.2 -------------------------------------------------


def partition(labels: dict[Node, str]) -> Partition:
    """The components a labelling describes: the sets of nodes that share a rudder_id."""
    groups: dict[str, set[Node]] = {}
    for node, label in labels.items():
        groups.setdefault(label, set()).add(node)
    return frozenset(frozenset(group) for group in groups.values())


def components(rules: Iterable[tuple[Node, Node | None]]) -> Partition:
    """The connected components of the rules' graph, computed by networkx."""
    graph: nx.Graph[Node] = nx.Graph()
    for one, two in rules:
        graph.add_node(one)
        if two is not None:
            graph.add_edge(one, two)
    return frozenset(frozenset(c) for c in nx.connected_components(graph))


def assert_relabelled_per_spec(before: dict[Node, str], after: dict[Node, str]) -> None:
    """§5.2 across one load: no node is lost; a component keeps its rudder_id unless it joins
    others; a join keeps the smallest of the joined ids; a new component gets a new id."""
    assert before.keys() <= after.keys(), "a mapped identifier lost its mapping"
    old_members: dict[str, set[Node]] = {}
    for node, label in before.items():
        old_members.setdefault(label, set()).add(node)
    for label, members in old_members.items():
        assert len({after[n] for n in members}) == 1, f"component {label} was split"
    for group in partition(after):
        label = after[next(iter(group))]
        joined = {before[n] for n in group if n in before}
        if joined:
            assert label == min(joined), (
                f"{sorted(group)}: rudder_id {label}, expected the smallest of {sorted(joined)}"
            )
        else:
            assert label not in old_members, f"a new component reused the stored id {label}"


# -- §5.1: each kind of event, as rows of the identity tables ------------------------------


RULE_CASES = [
    pytest.param(
        identify("u1", "a1"), ("anonymous_id", "a1", "user_id", "u1"), id="identify-anon-user"
    ),
    pytest.param(identify("u1"), ("user_id", "u1", None, None), id="identify-user-only"),
    pytest.param(identify(None, "a1"), ("anonymous_id", "a1", None, None), id="identify-anon-only"),
    pytest.param(track("u1", "a1"), ("anonymous_id", "a1", "user_id", "u1"), id="track-anon-user"),
    pytest.param(track("u1"), ("user_id", "u1", None, None), id="track-user-only"),
    pytest.param(track(None, "a1"), ("anonymous_id", "a1", None, None), id="track-anon-only"),
    pytest.param(page("u1", "a1"), ("anonymous_id", "a1", "user_id", "u1"), id="page-anon-user"),
    pytest.param(page("u1"), ("user_id", "u1", None, None), id="page-user-only"),
    pytest.param(
        _event("screen", "u1", "a1", name="Cart"),
        ("anonymous_id", "a1", "user_id", "u1"),
        id="screen-anon-user",
    ),
    pytest.param(
        _event("screen", "u1", None, name="Cart"), ("user_id", "u1", None, None), id="screen-user"
    ),
    pytest.param(
        _event("group", "u1", "a1", groupId="g1"),
        ("anonymous_id", "a1", "user_id", "u1"),
        id="group-anon-user",
    ),
    pytest.param(
        _event("group", None, "a1", groupId="g1"),
        ("anonymous_id", "a1", None, None),
        id="group-anon-only",
    ),
    pytest.param(alias("u2", "u1"), ("user_id", "u2", "user_id", "u1"), id="alias"),
    pytest.param(
        alias("u2", "u1", anonymousId="a1"),
        ("user_id", "u2", "user_id", "u1"),
        id="alias-ignores-anonymous-id",
    ),
    pytest.param(
        merge(("email", "alex@example.com"), ("phone", "+1-202-555")),
        ("email", "alex@example.com", "phone", "+1-202-555"),
        id="merge",
    ),
    pytest.param(
        identify("", "a1"), ("anonymous_id", "a1", None, None), id="blank-second-property"
    ),
    pytest.param(
        track(None, "a1", userId=None),
        ("anonymous_id", "a1", None, None),
        id="null-second-property",
    ),
    pytest.param(identify(42, 7), ("anonymous_id", "7", "user_id", "42"), id="numeric-ids"),
    pytest.param(identify(2.5), ("user_id", "2.5", None, None), id="float-user-id"),
    pytest.param(identify(True), ("user_id", "true", None, None), id="boolean-user-id"),
    pytest.param(alias(100, 99), ("user_id", "100", "user_id", "99"), id="numeric-alias"),
    pytest.param(
        merge(("phone", 2025550123), (7, "x")),
        ("phone", "2025550123", "7", "x"),
        id="numeric-merge-value-and-type",
    ),
]


@pytest.mark.parametrize(("event", "rule"), RULE_CASES)
def test_rule_kinds_land_in_merge_rules_and_mappings(
    ns: Namespace, event: Event, rule: Rule
) -> None:
    """§5.1 table (values stringified) -> one rules row; §5.2 -> one mapping row per node."""
    ns.load([event])
    assert ns.rules() == [rule]
    nodes = {(rule[0], rule[1])} | ({(rule[2], rule[3])} if rule[2] is not None else set())
    mappings = ns.mappings()
    assert set(mappings) == nodes
    label = mappings[(rule[0], rule[1])]
    assert set(mappings.values()) == {label}
    assert uuid.UUID(label)  # |R| = 0: a new random UUID
    assert all(at is not None for at in ns.updated().values())


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(_event("alias", None, "a1", previousId="u1"), id="alias-without-user-id"),
        pytest.param(_event("track", "u1", "a1", event="!!!"), id="track-without-event-table"),
    ],
)
def test_no_rule_when_property_one_is_blank_or_no_event_table(ns: Namespace, event: Event) -> None:
    """§5.1: property 1 blank -> no rule; a track makes a rule only with its event table."""
    ns.load([event, identify("other")])  # a control: rules of the same batch do land
    assert ns.rules() == [("user_id", "other", None, None)]
    assert set(ns.mappings()) == {("user_id", "other")}


def test_whitespace_user_id_is_no_identifier_and_joins_nobody(ns: Namespace) -> None:
    """§5.2 step 1: blank or whitespace values are NULL, so `userId: " "` is no node and two
    visitors who both sent it stay two people."""
    ns.load([identify(" ", "visitor-1"), identify(" ", "visitor-2")])
    mappings = ns.mappings()
    assert ("user_id", " ") not in mappings
    assert mappings[("anonymous_id", "visitor-1")] != mappings[("anonymous_id", "visitor-2")]


# -- §5.2: joins and relabelling -----------------------------------------------------------


def test_chain_grown_one_link_per_load_keeps_its_rudder_id(ns: Namespace) -> None:
    """§5.2 |R| = 1: a rule touching one component takes its id; the id never changes."""
    ns.load([identify("u0", "a0")])
    label = ns.mappings()[("user_id", "u0")]
    for i in range(1, 6):
        before = ns.mappings()
        ns.load([alias(f"u{i}", f"u{i - 1}")])
        after = ns.mappings()
        assert_relabelled_per_spec(before, after)
        assert set(after.values()) == {label}
        assert len(after) == i + 2


def test_star_leaves_added_in_and_across_loads_share_the_centre_id(ns: Namespace) -> None:
    """§5.2: leaves joined to one centre, several per load, all carry the centre's id."""
    centre = ("email", "hub@example.com")
    ns.load([merge(centre, ("phone", "p0"))])
    label = ns.mappings()[centre]
    ns.load([merge(centre, ("phone", f"p{i}")) for i in range(1, 5)])
    ns.load([merge(("device", f"d{i}"), centre) for i in range(3)])
    mappings = ns.mappings()
    assert len(mappings) == 1 + 5 + 3
    assert set(mappings.values()) == {label}


def _component(user: str, anons: int) -> list[Event]:
    """A user with several devices and an alias: `anons + 2` nodes, one component."""
    return [identify(user, f"{user}-anon-{i}") for i in range(anons)] + [alias(f"{user}-old", user)]


def test_two_big_components_joined_by_one_alias_keep_the_smallest_id(ns: Namespace) -> None:
    """§5.2 |R| >= 2: the survivor is the smallest id; every absorbed member is relabelled
    (with a new updated_at), and an unrelated component is left alone."""
    ns.load(_component("alice", 6) + _component("bob", 6) + _component("carol", 2))
    before = ns.mappings()
    stamps = ns.updated()
    a, b, c = (before[("user_id", name)] for name in ("alice", "bob", "carol"))
    assert len({a, b, c}) == 3

    ns.load([alias("alice-old", "bob-old")])
    after = ns.mappings()
    assert_relabelled_per_spec(before, after)
    survivor, absorbed = min(a, b), max(a, b)
    joined = [n for n, label in before.items() if label in (a, b)]
    assert len(joined) == 16
    assert {after[n] for n in joined} == {survivor}
    assert absorbed not in after.values()
    relabelled = ns.updated()
    assert all(relabelled[n] > stamps[n] for n in joined if before[n] == absorbed)
    carol = [n for n, label in before.items() if label == c]
    assert all(after[n] == c and relabelled[n] == stamps[n] for n in carol)


def test_merge_joins_an_email_component_to_a_phone_component(ns: Namespace) -> None:
    """§5.1 merge + §5.2: merge(email, phone) joins the users behind them; smallest id wins."""
    ns.load([identify("u1", "a1"), merge(("user_id", "u1"), ("email", "alex@example.com"))])
    ns.load([identify("u2", "a2"), merge(("user_id", "u2"), ("phone", "+1-202-555"))])
    before = ns.mappings()
    assert before[("email", "alex@example.com")] != before[("phone", "+1-202-555")]
    ns.load([merge(("email", "alex@example.com"), ("phone", "+1-202-555"))])
    after = ns.mappings()
    assert_relabelled_per_spec(before, after)
    assert len(after) == 6
    assert set(after.values()) == {min(before.values())}


def test_one_load_joining_three_components_keeps_the_smallest_of_three(ns: Namespace) -> None:
    """§5.2: several rules of one load touching three stored components -> one, min id."""
    ns.load([identify(f"u{i}", f"a{i}") for i in range(3)])
    before = ns.mappings()
    ns.load(
        [
            alias("u0", "u1"),
            merge(("email", "e"), ("user_id", "u2")),
            merge(("email", "e"), ("user_id", "u1")),
        ]
    )  # u2 reaches u0 and u1 only through the email, new in this very load
    after = ns.mappings()
    assert_relabelled_per_spec(before, after)
    assert set(after.values()) == {min(before.values())}


def test_loading_the_same_events_again_adds_no_rule_and_changes_no_mapping(
    ns: Namespace,
) -> None:
    """§5.2 step 2: a stored rule is dropped, whatever event brings it again (new messageIds,
    rules with a NULL second property included); a rule twice in one batch is stored once."""
    events = [
        identify("u1", "a1"),
        identify("u1", "a1"),  # the same rule twice in one batch
        track("u1", "a1"),
        page(None, "a9"),
        identify("u5"),
        alias("u2", "u1"),
        merge(("email", "e1"), ("user_id", "u2")),
    ]
    ns.load(events)
    rules, rows = ns.rules(), ns.mapping_rows()
    assert len(rules) == len(set(rules)) == 5
    ns.load(events)  # new messageIds: not deduplicated as events, only as rules
    ns.load(events[2:4])
    assert ns.rules() == rules
    assert ns.mapping_rows() == rows


def test_rebuild_gives_the_incremental_partition_and_keeps_rules(ns: Namespace) -> None:
    """§5.2 backfill (`loader identity rebuild`): recomputed from the stored rules alone."""
    ns.load([*_component("alice", 3), identify("solo")])
    ns.load([*_component("bob", 3), merge(("email", "e"), ("user_id", "alice"))])
    ns.load([alias("bob", "alice-old"), track(None, "lonely")])
    incremental, rules = ns.mappings(), ns.rules()
    result = ns.command("identity.rebuild")
    assert result == {"namespace": ns.name, "identifiers": len(incremental)}
    rebuilt = ns.mappings()
    assert partition(rebuilt) == partition(incremental)
    assert len(partition(rebuilt)) == 3
    assert ns.rules() == rules


# -- views and commands ---------------------------------------------------------------------


def test_event_views_take_the_user_id_then_the_anonymous_id(ns: Namespace) -> None:
    """`<table>_with_rudder_id`: a row's user decides, else its anonymous id; unified_users
    has one row per rudder_id with its ids and events."""
    ns.load([track("u1", "a1"), track(None, "a2"), page(None, "a1"), identify("u9")])
    ns.load([alias("u1", "u9")])
    mappings = ns.mappings()
    person = mappings[("user_id", "u1")]
    rows = ns.con.execute(
        f'SELECT user_id, anonymous_id, rudder_id FROM "{ns.name}".tracks_with_rudder_id '
        "ORDER BY anonymous_id"
    ).fetchall()
    assert rows == [("u1", "a1", person), (None, "a2", mappings[("anonymous_id", "a2")])]
    pages = ns.con.execute(f'SELECT rudder_id FROM "{ns.name}".pages_with_rudder_id').fetchall()
    assert pages == [(person,)]
    unified = ns.con.execute(
        "SELECT rudder_id, user_ids, anonymous_ids, other_ids, event_count "
        f'FROM "{ns.name}".unified_users ORDER BY event_count DESC'
    ).fetchall()
    assert unified == [
        (person, ["u1", "u9"], ["a1"], [], 3),
        (mappings[("anonymous_id", "a2")], [], ["a2"], [], 1),
    ]


def test_explain_names_the_events_of_the_shortest_chain(ns: Namespace) -> None:
    """`identity explain`: the edges (user_graph) linking two ids, each with its event."""
    ns.load([identify("u1", "a1", messageId="m-identify")])
    ns.load([alias("u2", "u1", messageId="m-alias"), identify("u3", "a3")])
    ns.load([merge(("user_id", "u2"), ("email", "e@x"), messageId="m-merge")])
    result = ns.command("identity.explain", a="a1", b="email:e@x")
    assert result["linked"] is True
    assert result["rudder_id"] == ns.mappings()[("anonymous_id", "a1")]
    steps = [(s["from"], s["to"], s["call_type"], s["message_id"]) for s in result["chain"]]
    assert steps == [
        ("anonymous_id:a1", "user_id:u1", "identify", "m-identify"),
        ("user_id:u1", "user_id:u2", "alias", "m-alias"),
        ("user_id:u2", "email:e@x", "merge", "m-merge"),
    ]
    assert all(s["source"] == ns.source for s in result["chain"])
    apart = ns.command("identity.explain", a="a1", b="a3")
    assert apart["linked"] is False and apart["chain"] == []
    with pytest.raises(UnknownIdentifier):
        ns.command("identity.show", identifier="nobody")


# -- property-based: partition == connected components (networkx) --------------------------

NODES = st.tuples(st.sampled_from(["anonymous_id", "user_id", "email"]), st.sampled_from("0123456"))
RULES = st.lists(st.tuples(NODES, st.none() | NODES), min_size=1, max_size=24)
FEW_RULES = st.lists(st.tuples(NODES, st.none() | NODES), min_size=6, max_size=20)
"""For the DuckDB path's 15 examples: enough rules, in >= 2 loads, that stored ids meet."""


def batches(
    data: st.DataObject, rules: list[tuple[Node, Node | None]], most: int, least: int = 1
) -> list[Any]:
    """The rules in a random order, cut into `least`..`most` non-empty micro-batches."""
    order = data.draw(st.permutations(rules), label="order")
    top = min(most, len(order))
    count = data.draw(st.integers(min(least, top), top), label="batches")
    cuts = sorted(
        data.draw(
            st.lists(
                st.integers(1, len(order) - 1), min_size=count - 1, max_size=count - 1, unique=True
            )
            if count > 1
            else st.just([]),
            label="cuts",
        )
    )
    bounds = [0, *cuts, len(order)]
    return [order[i:j] for i, j in itertools.pairwise(bounds)]


def as_rule(one: Node, two: Node | None) -> MergeRule:
    return MergeRule(one[0], one[1], *(two if two is not None else (None, None)))


@given(data=st.data(), rules=RULES)
@settings(max_examples=300, deadline=None)
def test_resolve_batch_by_batch_partition_is_connected_components(
    data: st.DataObject, rules: list[tuple[Node, Node | None]]
) -> None:
    """§5.2 + DESIGN invariant 5, pure: any order, any split -> the graph's components."""
    labels: dict[Node, str] = {}
    seen: list[tuple[Node, Node | None]] = []
    for batch in batches(data, rules, most=6):
        merge_rules = [as_rule(one, two) for one, two in batch]
        touched = {n for one, two in batch for n in (one, two) if n is not None}
        known = {n: labels[n] for n in touched if n in labels}
        result = resolve(merge_rules, known)
        assert not result.labels.keys() & known.keys(), "a stored node got a second label"
        assert result.labels.keys() == touched - known.keys()
        assert set(result.relabel) <= set(known.values())
        before = dict(labels)
        labels = {n: result.relabel.get(label, label) for n, label in labels.items()}
        labels.update(result.labels)
        assert_relabelled_per_spec(before, labels)
        seen += batch
        assert partition(labels) == components(seen)


def as_event(one: Node, two: Node | None) -> Event:
    """An event whose §5.1 rule links `one` and `two` (or names `one` alone)."""
    if two is None:
        if one[0] == "user_id":
            return identify(one[1])
        if one[0] == "anonymous_id":
            return track(None, one[1])
        return merge(one, one)  # the same node twice: a single node
    kinds = (one[0], two[0])
    if kinds == ("anonymous_id", "user_id"):
        return identify(two[1], one[1])
    if kinds == ("user_id", "anonymous_id"):
        return page(one[1], two[1])
    if kinds == ("user_id", "user_id"):
        return alias(one[1], two[1])
    return merge(one, two)


def expected_rule(one: Node, two: Node | None) -> Rule:
    if two is None:
        return (*one, *one) if one[0] == "email" else (*one, None, None)
    if (one[0], two[0]) == ("user_id", "anonymous_id"):
        return (*two, *one)
    return (*one, *two)


@given(data=st.data(), rules=FEW_RULES)
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_warehouse_partition_is_connected_components_and_rebuild_agrees(
    warehouse: Warehouse, data: st.DataObject, rules: list[tuple[Node, Node | None]]
) -> None:
    """§5.2 through Pipeline + DuckDB: micro-batches in any order -> the graph's components,
    each rule stored once, ids relabelled per §5.2; `identity rebuild` -> the same partition."""
    ns = warehouse.namespace()  # a fresh, empty namespace per example
    seen: list[tuple[Node, Node | None]] = []
    before: dict[Node, str] = {}
    for batch in batches(data, rules, most=4, least=2):
        ns.load([as_event(one, two) for one, two in batch])
        seen += batch
        after = ns.mappings()
        assert_relabelled_per_spec(before, after)
        assert partition(after) == components(seen)
        before = after
    stored = ns.rules()
    assert len(stored) == len(set(stored)), "a rule was stored twice"
    assert set(stored) == {expected_rule(one, two) for one, two in rules}
    ns.command("identity.rebuild")
    assert partition(ns.mappings()) == partition(before)


# -- end to end: HTTP -> spool -> loader -> `loader identity show|explain` -----------------


def cli_json(config: Settings, *args: str) -> Any:
    done = cli(config, *args, "--format", "json")
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


def post(server: Server, call: str, body: dict[str, Any]) -> None:
    assert server.write_key
    response = httpx.post(f"{server.url}/v1/{call}", json=body, headers=basic(server.write_key))
    assert response.status_code == 200, response.text


def flush(config: Settings) -> None:
    done = cli(config, "flush")
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_visitor_on_two_devices_is_one_person_through_http_and_cli(tmp_path: Path) -> None:
    """§5 end to end: anonymous browsing, identify, a second device, then alias + merge join
    it; `identity show` lists one person with every id and the traits, `identity explain`
    names the events (call_type, message_id) of the chain."""
    config = Settings(
        database=tmp_path / "w.duckdb", spool_dir=tmp_path / "spool", segment_max_age=3600.0
    )
    server = Server(config, tmp_path / "server.log")
    server.start()
    try:
        # Device 1: anonymous browsing, then sign-up.
        post(server, "page", {"anonymousId": "anon-1", "name": "Home", "messageId": "d1-page"})
        post(server, "track", {"anonymousId": "anon-1", "event": "Viewed", "messageId": "d1-tr"})
        post(
            server,
            "identify",
            {
                "anonymousId": "anon-1",
                "userId": "user-1",
                "messageId": "d1-identify",
                "traits": {"email": "alex@example.com", "name": "Alex"},
            },
        )
        flush(config)
        # Device 2: a separate person until the alias and the merge.
        post(server, "page", {"anonymousId": "anon-2", "name": "App", "messageId": "d2-page"})
        post(
            server,
            "identify",
            {
                "anonymousId": "anon-2",
                "userId": "user-2",
                "messageId": "d2-identify",
                "traits": {"phone": "+1-202-555"},
            },
        )
        flush(config)
        (first,) = cli_json(config, "identity", "show", "anon-1")
        (second,) = cli_json(config, "identity", "show", "anon-2")
        assert first["rudder_id"] != second["rudder_id"]

        post(server, "alias", {"userId": "user-2", "previousId": "user-1", "messageId": "d2-al"})
        post(
            server,
            "merge",
            {
                "userId": "user-2",
                "messageId": "d2-merge",
                "mergeProperties": [
                    {"type": "user_id", "value": "user-2"},
                    {"type": "email", "value": "alex@example.com"},
                ],
            },
        )
        flush(config)
        (person,) = cli_json(config, "identity", "show", "anon-1")
        assert person["rudder_id"] == min(first["rudder_id"], second["rudder_id"])  # §5.2
        assert person["user_ids"] == ["user-1", "user-2"]
        assert person["anonymous_ids"] == ["anon-1", "anon-2"]
        assert person["other_ids"] == ["email:alex@example.com"]
        assert person["event_count"] == 5  # 2 pages, 1 track, 2 identifies
        assert (person["email"], person["name"], person["phone"]) == (
            "alex@example.com",
            "Alex",
            "+1-202-555",
        )
        assert cli_json(config, "identity", "show", "email:alex@example.com") == [person]

        explained = cli_json(config, "identity", "explain", "anon-1", "user-2")
        assert explained["linked"] is True and explained["rudder_id"] == person["rudder_id"]
        steps = [(s["from"], s["to"], s["call_type"], s["message_id"]) for s in explained["chain"]]
        assert steps == [
            ("anonymous_id:anon-1", "user_id:user-1", "identify", "d1-identify"),
            ("user_id:user-1", "user_id:user-2", "alias", "d2-al"),
        ]
        to_email = cli_json(config, "identity", "explain", "anon-2", "email:alex@example.com")
        assert [(s["call_type"], s["message_id"]) for s in to_email["chain"]] == [
            ("identify", "d2-identify"),
            ("merge", "d2-merge"),
        ]
    finally:
        server.stop()
    with duckdb.connect(str(config.database), read_only=True) as con:
        labels = con.execute("SELECT DISTINCT rudder_id FROM main.rudder_identity_mappings")
        assert labels.fetchall() == [(person["rudder_id"],)]
