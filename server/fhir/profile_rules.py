"""Rules on one value of a profiled element: fixed[x], pattern[x], bindings, reference targets
and invariants, each compiled once into an ``ItemRule`` closure.

Semantics:

* ``fixed[x]``: the value equals the fixed value exactly (same JSON, a boolean never equals a
  number); ``pattern[x]``: the pattern is a subset of the value — objects recursively, arrays
  item by item (every pattern item matches some item of the value), primitives equal.
  Failure: error ``value``.
* bindings ``required`` (error) and ``extensible`` (warning), code ``code-invalid``: a ``code``
  is checked against the expansion (with the ValueSet's system when the expansion has a single
  system, else by code alone), a ``Coding`` by system and code, a ``CodeableConcept`` when at
  least one coding is in the expansion. A ValueSet the Terminology knows but cannot expand
  is checked by code system only (each coding's system must be one of its
  ``compose.include[].system``), as a warning. ``preferred``/``example`` are not checked.
* references: the target type comes from the resolved target (``resolve``, or a contained
  ``#id``), else from the reference string (``Type/id``, absolute or relative). A type outside
  the target types is an error ``structure``; a resolved target of a type allowed only through
  our profiles must conform to one of them (validated without further resolution), else an
  error ``structure``. An unresolvable reference is not an issue.
* invariants: the FHIRPath expression (:mod:`server.fhir.fhirpath`) on the value, with
  ``%resource`` the resource; unless the result holds, an issue ``invariant`` of the
  constraint's severity, diagnostics ``<key>: <human>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from server.fhir.fhirpath import FhirPathError, compile_fhirpath, holds
from server.fhir.outcome import Issue
from server.fhir.profile_tree import BASE_TYPE_URL, ElementNode, ProfileError
from server.fhir.references import reference_type

if TYPE_CHECKING:
    from server.fhir.terminology import Terminology

Resolve = Callable[[str], dict[str, Any] | None]


class TargetValidator:
    """What reference rules need of the profile set: base types and target validation."""

    def base_type(self, url: str) -> str | None:  # pragma: no cover - interface
        raise NotImplementedError

    def conforms(self, resource: dict[str, Any], url: str) -> bool:  # pragma: no cover
        raise NotImplementedError


@dataclass(slots=True)
class Run:
    """One validation: the resource (for ``%resource`` and contained targets), the resolver,
    the issues found so far and the profile set (for reference targets)."""

    resource: dict[str, Any]
    resolve: Resolve | None
    issues: list[Issue]
    targets: TargetValidator


ItemRule = Callable[[Any, str, str, Run], None]  # (value, type, expression, run)


@dataclass(frozen=True, slots=True)
class Where:
    """Which profile and element a rule belongs to, for diagnostics."""

    url: str  # the profile's canonical URL (for compile errors)
    profile: str  # the profile's id
    element: str  # the element id
    kind: str = "profile"  # or "extension"

    def say(self, message: str) -> str:
        return f"{self.element}: {message} ({self.kind} {self.profile})"

    def error(self, message: str) -> ProfileError:
        return ProfileError(self.url, f"{self.element}: {message}")


def same_json(value: Any, fixed: Any) -> bool:
    """JSON equality in which ``true`` is not ``1``."""
    if (value.__class__ is bool) != (fixed.__class__ is bool):
        return False
    if fixed.__class__ is dict:
        return (
            value.__class__ is dict
            and value.keys() == fixed.keys()
            and all(same_json(value[k], v) for k, v in fixed.items())
        )
    if fixed.__class__ is list:
        return (
            value.__class__ is list
            and len(value) == len(fixed)
            and all(same_json(a, b) for a, b in zip(value, fixed, strict=True))
        )
    return bool(value == fixed)


def pattern_match(value: Any, pattern: Any) -> bool:
    """Whether ``value`` contains ``pattern`` (see the module docstring)."""
    if pattern.__class__ is dict:
        return value.__class__ is dict and all(
            key in value and pattern_match(value[key], item) for key, item in pattern.items()
        )
    if pattern.__class__ is list:
        return value.__class__ is list and all(
            any(pattern_match(v, item) for v in value) for item in pattern
        )
    return same_json(value, pattern)


def value_rule(node: ElementNode, where: Where) -> ItemRule | None:
    """The fixed[x]/pattern[x] rule of the node's own element."""
    if node.element is None:
        return None
    for key, wanted in node.element.items():
        kind = (
            "fixed" if key.startswith("fixed") else "pattern" if key.startswith("pattern") else ""
        )
        if kind and key[len(kind) : len(kind) + 1].isupper():
            return _value_check(kind, wanted, where)
    return None


def _value_check(kind: str, wanted: Any, where: Where) -> ItemRule:
    test = same_json if kind == "fixed" else pattern_match
    shown = wanted if wanted.__class__ is not dict and wanted.__class__ is not list else None
    message = where.say(
        f"value must be {shown!r}" if shown is not None else f"value does not match the {kind}"
    )

    def check(value: Any, type: str, expression: str, run: Run) -> None:
        if not test(value, wanted):
            run.issues.append(Issue("error", "value", message, expression))

    return check


def binding_rule(node: ElementNode, where: Where, terminology: Terminology) -> ItemRule | None:
    binding = node.element.get("binding") if node.element is not None else None
    if binding is None:
        return None
    if not isinstance(binding, dict):
        raise where.error("binding is not an object")
    strength = binding.get("strength")
    if strength in ("preferred", "example"):
        return None
    if strength not in ("required", "extensible"):
        raise where.error(f"binding strength {strength!r}")
    url = binding.get("valueSet")
    if not isinstance(url, str):
        raise where.error("binding without valueSet")
    types = {t for _, t in node.variants}
    unsupported = types - {"code", "Coding", "CodeableConcept", "string", "uri"}
    if unsupported:
        raise where.error(f"bindings on {sorted(unsupported)[0]} are not supported")
    codes = terminology.expand(url)
    if codes is None:
        valueset = terminology.valueset(url)
        if valueset is None:
            raise where.error(f"unknown ValueSet {url}")
        return _system_rule(valueset, url, where)
    severity = "error" if strength == "required" else "warning"
    systems = {system for system, _ in codes}
    only = next(iter(systems)) if len(systems) == 1 else None
    bare = frozenset(code for _, code in codes)

    def coded(coding: Any) -> bool:
        return coding.__class__ is dict and (coding.get("system"), coding.get("code")) in codes

    def report(message: str, expression: str, run: Run) -> None:
        run.issues.append(
            Issue(
                severity, "code-invalid", where.say(f"{message} ({strength} binding)"), expression
            )
        )

    def check(value: Any, type: str, expression: str, run: Run) -> None:
        if value.__class__ is str:
            if (only, value) not in codes if only is not None else value not in bare:
                report(f"code {value!r} is not in the value set {url}", expression, run)
        elif value.__class__ is dict and type == "Coding":
            if not coded(value):
                shown = f"{value.get('system')}#{value.get('code')}"
                report(f"coding {shown} is not in the value set {url}", expression, run)
        elif value.__class__ is dict and type == "CodeableConcept":
            codings = value.get("coding") or []
            if not any(coded(c) for c in codings):
                report(f"no coding from the value set {url}", expression, run)

    return check


def _system_rule(valueset: Mapping[str, Any], url: str, where: Where) -> ItemRule:
    compose = valueset.get("compose") or {}
    systems = frozenset(
        part["system"] for part in compose.get("include", []) if isinstance(part.get("system"), str)
    )

    def check_coding(coding: Any, expression: str, run: Run) -> None:
        if coding.__class__ is dict and coding.get("system") not in systems:
            message = where.say(
                f"code system {coding.get('system')} is not one of the value set {url} "
                f"({', '.join(sorted(systems))}); the value set cannot be expanded here"
            )
            run.issues.append(Issue("warning", "code-invalid", message, expression))

    def check(value: Any, type: str, expression: str, run: Run) -> None:
        if value.__class__ is not dict:
            return
        if type == "Coding":
            check_coding(value, expression, run)
        elif type == "CodeableConcept":
            for i, coding in enumerate(value.get("coding") or []):
                check_coding(coding, f"{expression}.coding[{i}]", run)

    return check


def reference_rule(
    node: ElementNode, where: Where, known: Callable[[str], str | None]
) -> ItemRule | None:
    """The target rule of a Reference element with ``targetProfile``; ``known`` gives the base
    type of our profiles (None for URLs that are not ours)."""
    if node.element is None or "Reference" not in {t for _, t in node.variants}:
        return None
    urls = [u for t in node.element.get("type", []) for u in t.get("targetProfile", [])]
    if not urls:
        return None
    any_of: set[str] = set()  # types allowed whatever their profile
    profiled: dict[str, list[str]] = {}  # type -> our profiles allowed for it
    for url in urls:
        bare = url.partition("|")[0]
        ours = known(bare)
        if ours is not None:
            profiled.setdefault(ours, []).append(bare)
        elif bare.startswith(BASE_TYPE_URL) and "/" not in bare[len(BASE_TYPE_URL) :]:
            any_of.add(bare[len(BASE_TYPE_URL) :])
        else:
            raise where.error(f"unknown targetProfile {url}")
    allowed = any_of | set(profiled)
    listed = ", ".join(sorted(allowed))

    def check(value: Any, type: str, expression: str, run: Run) -> None:
        if type != "Reference":  # a choice element holding another of its types
            return
        reference = value.get("reference") if value.__class__ is dict else None
        if reference.__class__ is not str:
            return
        target: Any = None
        if reference.startswith("#"):
            for item in run.resource.get("contained") or ():
                if item.__class__ is dict and item.get("id") == reference[1:]:
                    target = item
        elif run.resolve is not None:
            target = run.resolve(reference)
        kind = target.get("resourceType") if target.__class__ is dict else None
        if kind.__class__ is not str:
            target, kind = None, reference_type(reference)
        if kind is None:
            return
        if kind not in allowed:
            message = where.say(f"reference to a {kind}, expected {listed}")
            run.issues.append(Issue("error", "structure", message, expression))
        elif target is not None and kind not in any_of:
            if not any(run.targets.conforms(target, url) for url in profiled[kind]):
                names = ", ".join(u.rsplit("/", 1)[-1] for u in profiled[kind])
                message = where.say(f"the referenced {kind} does not conform to {names}")
                run.issues.append(Issue("error", "structure", message, expression))

    return check


def invariant_rules(node: ElementNode, where: Where, terminology: Terminology) -> list[ItemRule]:
    constraints = node.element.get("constraint") if node.element is not None else None
    if not constraints:
        return []
    context = node.type
    if context is None:
        raise where.error("invariants need an element of one type")
    rules: list[ItemRule] = []
    for constraint in constraints:
        key, expression = constraint.get("key"), constraint.get("expression")
        severity, human = constraint.get("severity"), constraint.get("human", "")
        if not isinstance(key, str) or not isinstance(expression, str):
            raise where.error("a constraint needs key and expression")
        if severity not in ("error", "warning"):
            raise where.error(f"constraint {key}: severity {severity!r}")
        try:
            evaluate = compile_fhirpath(expression, context, terminology)
        except FhirPathError as error:
            raise where.error(f"constraint {key}: {error}") from None
        message = f"{key}: {human} ({where.kind} {where.profile})"
        rules.append(_invariant(evaluate, severity, message))
    return rules


def _invariant(evaluate: Callable[[Any, Any], Any], severity: str, message: str) -> ItemRule:
    def check(value: Any, type: str, expression: str, run: Run) -> None:
        if not holds(evaluate(value, run.resource)):
            run.issues.append(Issue(severity, "invariant", message, expression))

    return check
