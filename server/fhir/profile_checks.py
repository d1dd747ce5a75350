"""A profile's element tree compiled into checks that walk the JSON.

A ``ParentCheck`` takes one instance of the parent element (a JSON object) and its FHIRPath
expression, collects the element's values there and checks:

* cardinality relative to that parent (``min`` → error ``required``, ``max`` → error
  ``structure``), reported at ``<parent>.<element>``;
* the types a profile allows on a choice element (a value of another type → error
  ``structure``);
* the item rules of :mod:`server.fhir.profile_rules` on each value;
* its children, on each value that is an object;
* its slices (:mod:`server.fhir.slicing`): each item goes to the first slice it matches;
  slice cardinality is checked per parent; a slice's rules and children apply only to its
  items; with closed slicing an item matching no slice is an error ``structure``.

Expressions index every repeating element (``ServiceRequest.category[1]``), name choices by
type (``Observation.value.ofType(Quantity)``) and reach primitive extensions through the
primitive (``Patient.birthDate.extension[0]``). Subtrees without rules of this profile compile
to nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from server.fhir.element_paths import ElementInfo, ElementModel
from server.fhir.outcome import Issue
from server.fhir.profile_rules import (
    ItemRule,
    Run,
    Where,
    binding_rule,
    invariant_rules,
    reference_rule,
    value_rule,
)
from server.fhir.profile_tree import ElementNode
from server.fhir.slicing import slice_matcher, slicing_of

if TYPE_CHECKING:
    from server.fhir.terminology import Terminology

ParentCheck = Callable[[dict[str, Any], str, Run], None]
Item = tuple[Any, str, str]  # (value, type, expression)
Collector = Callable[[dict[str, Any], str], list[Item]]


def collector(info: ElementInfo, model: ElementModel) -> Collector:
    """The values of an element in one parent object, with their types and expressions."""
    name, base, array = info.name, info.base, info.array
    variants = [
        (json, type, f"_{json}" if model.is_primitive(type) else None, f".ofType({type})")
        for json, type in info.variants
    ]
    if not info.choice and len(variants) == 1:
        ((json, type, shadow, _),) = variants

        def collect_one(parent: dict[str, Any], where: str) -> list[Item]:
            value = parent.get(json)
            extra = parent.get(shadow) if shadow is not None else None
            if value is None and extra is None:
                return []
            if not array:
                return [(value, type, f"{where}.{name}")]
            values = value if value.__class__ is list else []
            size = max(len(values), len(extra) if extra.__class__ is list else 0)
            return [
                (values[i] if i < len(values) else None, type, f"{where}.{name}[{i}]")
                for i in range(size)
            ]

        return collect_one

    by_key: dict[str, tuple[str, str]] = {}
    for json, type, shadow, _ in variants:
        by_key[json] = (json, type)
        if shadow is not None:
            by_key[shadow] = (json, type)
    order = {json: i for i, (json, _, _, _) in enumerate(variants)}

    def collect_choice(parent: dict[str, Any], where: str) -> list[Item]:
        found: dict[str, str] = {}
        for key in parent:
            hit = by_key.get(key)
            if hit is not None:
                found[hit[0]] = hit[1]
        if len(found) > 1:
            found = dict(sorted(found.items(), key=lambda pair: order[pair[0]]))
        return [
            (parent.get(json), type, f"{where}.{base}.ofType({type})")
            for json, type in found.items()
        ]

    return collect_choice


class CheckCompiler:
    """Compiles the nodes of one definition (``kind`` ``profile`` or ``extension``)."""

    def __init__(
        self,
        model: ElementModel,
        terminology: Terminology,
        known: Callable[[str], str | None],
        url: str,
        profile_id: str,
        kind: str,
    ) -> None:
        self.model = model
        self.terminology = terminology
        self.known = known
        self.url = url
        self.profile_id = profile_id
        self.kind = kind

    def where(self, node: ElementNode) -> Where:
        return Where(self.url, self.profile_id, node.id, self.kind)

    def item_rules(self, node: ElementNode) -> list[ItemRule]:
        where = self.where(node)
        rules = [
            value_rule(node, where),
            binding_rule(node, where, self.terminology),
            reference_rule(node, where, self.known),
        ]
        return [r for r in rules if r is not None] + invariant_rules(node, where, self.terminology)

    def root(self, node: ElementNode) -> ParentCheck:
        """The check of a whole resource (or extension) against the tree rooted at ``node``."""
        rules = self.item_rules(node)
        children = self.children(node)
        type = node.id

        def check_root(value: dict[str, Any], where: str, run: Run) -> None:
            for rule in rules:
                rule(value, type, where, run)
            for child in children:
                child(value, where, run)

        return check_root

    def children(self, node: ElementNode) -> list[ParentCheck]:
        out = [self.element(child) for child in node.children.values()]
        return [check for check in out if check is not None]

    def item_check(self, node: ElementNode) -> Callable[[Any, str, str, Run], None] | None:
        rules = self.item_rules(node)
        children = self.children(node)
        if not rules and not children:
            return None

        def check_item(value: Any, type: str, expression: str, run: Run) -> None:
            for rule in rules:
                rule(value, type, expression, run)
            if children and value.__class__ is dict:
                for child in children:
                    child(value, expression, run)

        return check_item

    def cardinality(self, node: ElementNode, label: str) -> tuple[int, int | None]:
        element = node.element or {}
        low = element.get("min", 0)
        high = element.get("max", "*")
        if not isinstance(low, int) or low < 0 or not isinstance(high, str):
            raise self.where(node).error("invalid min/max")
        if high == "*":
            return low, None
        if not high.isdigit():
            raise self.where(node).error(f"invalid max {high!r}")
        info = node.info
        if info is not None and not info.array and int(high) > 1 and node.slice_name is None:
            raise self.where(node).error(f"max {high} on an element that does not repeat")
        return low, int(high)

    def element(self, node: ElementNode) -> ParentCheck | None:
        info = node.info
        assert info is not None
        low, high = self.cardinality(node, node.id)
        where = self.where(node)
        restricted = frozenset(t for _, t in node.variants) if info.choice else None
        if restricted is not None and len(restricted) == len(info.variants):
            restricted = None
        if node.element is None or node.element.get("type") is None:
            restricted = None
        item = self.item_check(node)
        slices = self.slices(node, where)
        if low == 0 and high is None and restricted is None and item is None and not slices:
            return None
        collect = collector(info, self.model)
        at = f".{info.base}"
        too_few = where.say(f"minimum {low}, found {{}}")
        too_many = where.say(f"maximum {high}, found {{}}")
        allowed = ", ".join(sorted(restricted)) if restricted else ""

        def check(parent: dict[str, Any], expression: str, run: Run) -> None:
            items = collect(parent, expression)
            count = len(items)
            if count < low:
                run.issues.append(
                    Issue("error", "required", too_few.format(count), expression + at)
                )
            if high is not None and count > high:
                run.issues.append(
                    Issue("error", "structure", too_many.format(count), expression + at)
                )
            for value, type, item_expression in items:
                if restricted is not None and type not in restricted:
                    message = where.say(f"type {type} is not allowed (allowed: {allowed})")
                    run.issues.append(Issue("error", "structure", message, item_expression))
                elif item is not None:
                    item(value, type, item_expression, run)
            if slices:
                slices(items, expression + at, run)

        return check

    def slices(
        self, node: ElementNode, where: Where
    ) -> Callable[[list[Item], str, Run], None] | None:
        sliced = slicing_of(node, where)
        if sliced is None:
            return None
        discriminators, closed = sliced
        compiled = []
        for slice_node in node.slices.values():
            slice_where = self.where(slice_node)
            low, high = self.cardinality(slice_node, slice_node.id)
            compiled.append(
                (
                    slice_matcher(slice_node, discriminators, slice_where),
                    low,
                    high,
                    self.item_check(slice_node),
                    slice_where,
                )
            )
        if not closed and all(
            low == 0 and high is None and check is None for _, low, high, check, _ in compiled
        ):
            return None
        unmatched = where.say("matches none of the slices (closed slicing)")

        def check_slices(items: list[Item], element_expression: str, run: Run) -> None:
            counts = [0] * len(compiled)
            for value, type, expression in items:
                for i, (match, _, _, check, _) in enumerate(compiled):
                    if match(value):
                        counts[i] += 1
                        if check is not None:
                            check(value, type, expression, run)
                        break
                else:
                    if closed:
                        run.issues.append(Issue("error", "structure", unmatched, expression))
            for count, (_, low, high, _, slice_where) in zip(counts, compiled, strict=True):
                if count < low:
                    message = slice_where.say(f"minimum {low}, found {count}")
                    run.issues.append(Issue("error", "required", message, element_expression))
                if high is not None and count > high:
                    message = slice_where.say(f"maximum {high}, found {count}")
                    run.issues.append(Issue("error", "structure", message, element_expression))

        return check_slices
