"""Identity resolution: merge rules -> connected components of identifiers, each a rudder_id.

Pure: `resolve` takes a batch's new rules and the stored labels of the nodes they touch, and
returns the labels of new nodes and the relabelling of joined components (spec/warehouse.md
§5.2). The warehouse applies both in the load's transaction. The partition depends only on
the set of rules, never on their order or on how they were split into batches.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from loader.flatten import MergeRule

Node = tuple[str, str]
"""(merge_property_type, merge_property_value)"""


class Resolution(NamedTuple):
    labels: dict[Node, str]
    """rudder_id of every node of the rules that has none yet."""
    relabel: dict[str, str]
    """Absorbed rudder_id -> surviving rudder_id (the smallest of those joined, §5.2)."""


def nodes(rule: MergeRule) -> list[Node]:
    """A rule's nodes: the first always, the second when both its type and value are set."""
    found = [(rule.type1, rule.value1)]
    if rule.type2 is not None and rule.value2 is not None:
        found.append((rule.type2, rule.value2))
    return found


def resolve(
    rules: Iterable[MergeRule],
    known: Mapping[Node, str],
    new_label: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> Resolution:
    """Union-find over the rules' nodes and the stored labels they carry.

    A stored label is an item of its own here (a `_Label`, never equal to a node tuple), joined
    to each stored node that carries it: two rules that touch the same stored component end in
    one component even when no rule of this batch links them directly.
    """
    parent: dict[Node | _Label, Node | _Label] = {}

    def find(item: Node | _Label) -> Node | _Label:
        root = parent.setdefault(item, item)
        while parent[root] != root:
            root = parent[root]
        while parent[item] != root:  # path compression
            parent[item], item = root, parent[item]
        return root

    def union(a: Node | _Label, b: Node | _Label) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb

    for rule in rules:
        members = nodes(rule)
        for node in members:
            find(node)
            label = known.get(node)
            if label is not None:
                union(node, _Label(label))
        if len(members) == 2:
            union(members[0], members[1])

    components: dict[Node | _Label, list[Node | _Label]] = {}
    for item in list(parent):
        components.setdefault(find(item), []).append(item)

    labels: dict[Node, str] = {}
    relabel: dict[str, str] = {}
    for component in components.values():
        stored = sorted(str(m) for m in component if isinstance(m, _Label))
        survivor = stored[0] if stored else new_label()
        for absorbed in stored[1:]:
            relabel[absorbed] = survivor
        for member in component:
            if isinstance(member, tuple) and member not in known:
                labels[member] = survivor
    return Resolution(labels, relabel)


class _Label(str):
    """A stored rudder_id as an item of the union-find (nodes are tuples, so never equal)."""

    __slots__ = ()
