"""Slice membership: which slice an item of a sliced element belongs to.

Supported discriminators: ``value`` and ``pattern`` on a path (``$this`` or a dotted path of
child elements, e.g. ``coding``, ``system``, ``type.coding``). The slice states the value at
that path with a ``fixed[x]`` (exact match) or ``pattern[x]`` (subset match) on the element the
path reaches inside the slice; an item belongs to the slice when some value at the path
matches. Extensions are sliced by ``url``: the slice's URL is its ``type[0].profile[0]`` (or the
``fixedUri`` of its ``url`` child, for the parts of a complex extension). Slices of
``extension``/``modifierExtension`` without a ``slicing`` declaration are sliced by ``url``,
open. An item belongs to the first slice it matches; ``rules: closed`` makes items matching no
slice errors. Other discriminator types, ``ordered: true`` and re-slicing raise
``ProfileError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server.fhir.profile_rules import Where, pattern_match, same_json
from server.fhir.profile_tree import ElementNode

Matcher = Callable[[Any], bool]
_EXTENSIONS = ("extension", "modifierExtension")


def slicing_of(node: ElementNode, where: Where) -> tuple[list[tuple[str, str]], bool] | None:
    """``([(discriminator type, path), ...], closed)`` of a sliced element, or None."""
    slicing = node.get("slicing")
    name = node.info.name if node.info is not None else ""
    if slicing is None:
        if not node.slices:
            return None
        if name in _EXTENSIONS:
            return [("value", "url")], False
        raise where.error("slices without a slicing declaration")
    if not isinstance(slicing, dict):
        raise where.error("slicing is not an object")
    if slicing.get("ordered") is True:
        raise where.error("ordered slicing is not supported")
    rules = slicing.get("rules", "open")
    if rules not in ("open", "closed"):
        raise where.error(f"slicing rules {rules!r} are not supported")
    discriminators: list[tuple[str, str]] = []
    for d in slicing.get("discriminator") or []:
        kind, path = d.get("type"), d.get("path")
        if kind not in ("value", "pattern") or not isinstance(path, str):
            raise where.error(f"slicing discriminator type {kind!r} is not supported")
        discriminators.append((kind, path))
    if not discriminators:
        if name in _EXTENSIONS:
            discriminators = [("value", "url")]
        else:
            raise where.error("slicing without discriminator")
    return discriminators, rules == "closed"


def _extension_url(node: ElementNode) -> str | None:
    for t in node.get("type") or []:
        profiles = t.get("profile") or []
        if t.get("code") == "Extension" and profiles:
            url: str = profiles[0].partition("|")[0]
            return url
    url_node = node.children.get("url")
    constraint = url_node.value_constraint() if url_node is not None else None
    if constraint is not None and isinstance(constraint[1], str):
        return constraint[1]
    return None


def slice_matcher(
    node: ElementNode, discriminators: list[tuple[str, str]], where: Where
) -> Matcher:
    """The test of membership in the slice ``node`` (see the module docstring)."""
    tests: list[Matcher] = []
    for _, path in discriminators:
        if path == "url" and node.type == "Extension":
            url = _extension_url(node)
            if url is None:
                raise where.error("an extension slice needs type.profile or a fixed url")
            tests.append(_url_test(url))
            continue
        target = node
        steps: list[tuple[str, ...]] = []
        for name in [] if path == "$this" else path.split("."):
            child = target.children.get(name)
            if child is None or child.info is None:
                raise where.error(f"the slice has no value at the discriminator path {path}")
            target = child
            steps.append(tuple(json for json, _ in child.variants))
        constraint = target.value_constraint()
        if constraint is None:
            raise where.error(f"the slice has no fixed/pattern value at {path}")
        kind, wanted = constraint
        tests.append(_test(steps, same_json if kind == "fixed" else pattern_match, wanted))
    if len(tests) == 1:
        return tests[0]
    return lambda item: all(test(item) for test in tests)


def _url_test(url: str) -> Matcher:
    def match(item: Any) -> bool:
        return item.__class__ is dict and item.get("url") == url

    return match


def _test(
    steps: list[tuple[str, ...]], compare: Callable[[Any, Any], bool], wanted: Any
) -> Matcher:
    def match(item: Any) -> bool:
        current = [item]
        for keys in steps:
            found: list[Any] = []
            for value in current:
                if value.__class__ is dict:
                    for key in keys:
                        child = value.get(key)
                        if child.__class__ is list:
                            found.extend(child)
                        elif child is not None:
                            found.append(child)
            current = found
        return any(compare(value, wanted) for value in current)

    return match
