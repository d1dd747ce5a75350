"""The terminology operations: ``$expand``, ``$validate-code``, ``$lookup``, ``$translate``.

Each handler takes the :class:`~server.fhir.terminology.Terminology` to answer from, the
resource of an instance-level call (``ValueSet/[id]/$expand``: that ValueSet; None at type
level) and the parsed inputs (:func:`server.operations.parameters.parse_input` against the
OperationDefinition named in :data:`TERMINOLOGY_OPERATIONS`), and returns the response
resource. At type level, the artifact is the inline resource parameter (``valueSet``,
``codeSystem``, ``conceptMap``) or the one whose canonical is ``url`` (``|version`` from
``valueSetVersion`` / ``version`` / ``conceptMapVersion``).

Answers (R4):

* ``ValueSet/$expand`` -> the ValueSet with its ``expansion`` (``filter``, ``offset``,
  ``count``, ``includeDesignations``, ``includeDefinition``); 404 for an unknown ValueSet,
  422 for one that cannot be expanded here (a compose form or code system not held locally);
* ``ValueSet/$validate-code`` and ``CodeSystem/$validate-code`` -> ``Parameters`` with
  ``result``, ``display`` and ``message``; an unknown code is ``result=false`` (200) with the
  reason, a display that does not match is a warning ``message`` with ``result=true``; 404 for
  an unknown ValueSet / CodeSystem, 422 when it cannot be enumerated;
* ``CodeSystem/$lookup`` -> ``Parameters`` with ``name``, ``version``, ``display``,
  ``designation`` and ``property`` (the concept's properties plus ``definition``, ``parent``
  and ``child``; only those asked with ``property`` when given); 404 for an unknown code
  system or code;
* ``ConceptMap/$translate`` -> ``Parameters`` with ``result`` (some match is neither
  ``unmatched`` nor ``disjoint``), ``message`` when none, and one ``match`` per mapping
  (``equivalence``, ``concept``, ``product``, ``dependsOn``, ``source``).

Missing or contradictory inputs are 400 (:class:`~server.errors.BadRequest`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from server.errors import BadRequest, NotFound, Unprocessable
from server.fhir.terminology import Terminology
from server.operations.call import Call, Implementation
from server.operations.parameters import PRIMITIVES, Typed, first, to_parameters

Params = dict[str, list[Any]]
Handler = Callable[[Terminology, dict[str, Any] | None, Params], dict[str, Any]]

_UNEXPANDABLE = (
    "only enumerated concepts, whole code systems held here, concept is-a / descendent-of filters "
    "and included value sets are expanded here"
)


def _canonical(params: Params, version_param: str) -> str | None:
    url = first(params, "url")
    version = first(params, version_param)
    if url is None:
        if version is not None:
            raise BadRequest(f"{version_param} needs url", expression=version_param)
        return None
    return f"{url}|{version}" if version else str(url)


def _target(
    instance: dict[str, Any] | None, params: Params, inline: str, version_param: str, kind: str
) -> str | dict[str, Any]:
    """The artifact an invocation is about: the instance, an inline resource or a url."""
    url = _canonical(params, version_param)
    resource = first(params, inline)
    given = [x for x in (instance, url, resource) if x is not None]
    if len(given) > 1:
        raise BadRequest(f"Give one {kind}: the instance, url or {inline}", expression=inline)
    if not given:
        raise BadRequest(f"A {kind} is required: url or {inline}", expression="url")
    target: str | dict[str, Any] = given[0]
    return target


def _unknown(kind: str, url: str) -> NotFound:
    return NotFound(f"{kind} '{url[:200]}' is not known here", expression="url")


# -- ValueSet/$expand --------------------------------------------------------------------------


def expand(
    terminology: Terminology, instance: dict[str, Any] | None, params: Params
) -> dict[str, Any]:
    """``ValueSet/$expand`` and ``ValueSet/[id]/$expand``: the ValueSet with its expansion."""
    target = _target(instance, params, "valueSet", "valueSetVersion", "ValueSet")
    if isinstance(target, str) and terminology.valueset(target) is None:
        raise _unknown("ValueSet", target)
    offset, count = first(params, "offset", 0), first(params, "count")
    if offset < 0 or (count is not None and count < 0):
        raise BadRequest("offset and count must not be negative", expression="offset")
    result = terminology.expansion(
        target,
        filter=first(params, "filter"),
        offset=offset,
        count=count,
        include_designations=bool(first(params, "includeDesignations", False)),
        include_definition=bool(first(params, "includeDefinition", False)),
    )
    if result is None:
        name = target if isinstance(target, str) else target.get("url", "the given ValueSet")
        raise Unprocessable(f"ValueSet '{str(name)[:200]}' cannot be expanded: {_UNEXPANDABLE}")
    return result


# -- $validate-code ----------------------------------------------------------------------------


def _code_inputs(params: Params, system_param: str | None) -> dict[str, Any]:
    code, coding, concept = (first(params, n) for n in ("code", "coding", "codeableConcept"))
    if sum(x is not None for x in (code, coding, concept)) != 1:
        raise BadRequest("Give exactly one of code, coding or codeableConcept", expression="code")
    if code is None and first(params, "display") is not None:
        raise BadRequest("display goes with code (a coding carries its own)", expression="display")
    out = {"code": code, "display": first(params, "display"), "coding": coding}
    out["codeable_concept"] = concept
    if system_param is not None:
        out["system"] = first(params, system_param)
    return out


def _validation_result(found: Mapping[str, Any]) -> dict[str, Any]:
    return to_parameters(
        [
            ("result", found["result"]),
            ("message", found.get("message")),
            ("display", found.get("display")),
        ]
    )


def validate_code_valueset(
    terminology: Terminology, instance: dict[str, Any] | None, params: Params
) -> dict[str, Any]:
    """``ValueSet/$validate-code``: whether a code / Coding / CodeableConcept is in the set."""
    target = _target(instance, params, "valueSet", "valueSetVersion", "ValueSet")
    if isinstance(target, str) and terminology.valueset(target) is None:
        raise _unknown("ValueSet", target)
    inputs = _code_inputs(params, "system")
    if inputs["code"] is None and inputs.get("system") is not None:
        raise BadRequest("system goes with code (a coding carries its own)", expression="system")
    found = terminology.validate_code(target, **inputs)
    if found is None:
        raise Unprocessable(f"The ValueSet cannot be expanded: {_UNEXPANDABLE}")
    return _validation_result(found)


def validate_code_codesystem(
    terminology: Terminology, instance: dict[str, Any] | None, params: Params
) -> dict[str, Any]:
    """``CodeSystem/$validate-code``: whether a code / Coding / CodeableConcept is defined by
    the CodeSystem (a plain ``code`` is taken in that CodeSystem)."""
    target = _target(instance, params, "codeSystem", "version", "CodeSystem")
    resource = terminology.codesystem(target) if isinstance(target, str) else target
    if resource is None:
        raise _unknown("CodeSystem", str(target))
    inputs = _code_inputs(params, None)
    if inputs["code"] is not None:
        inputs["system"] = resource.get("url")
    found = terminology.validate_code(resource, **inputs)
    if found is None:
        content = resource.get("content")
        raise Unprocessable(
            f"CodeSystem '{resource.get('url')}' has content '{content}': its codes are not all "
            "known here"
        )
    return _validation_result(found)


# -- CodeSystem/$lookup ------------------------------------------------------------------------


def lookup(
    terminology: Terminology, instance: dict[str, Any] | None, params: Params
) -> dict[str, Any]:
    """``CodeSystem/$lookup``: what the code system says about a code (404 when unknown)."""
    code, system, coding = first(params, "code"), first(params, "system"), first(params, "coding")
    if instance is not None:
        system = system or instance.get("url")
    if (code is None) == (coding is None):
        raise BadRequest("Give either code (with system) or coding", expression="code")
    if coding is not None:
        code, system = coding.get("code"), coding.get("system")
    if not isinstance(code, str) or not isinstance(system, str):
        raise BadRequest("A code and its system are required", expression="system")
    version = first(params, "version") or (coding or {}).get("version")
    found = terminology.lookup(system, code, version)
    if found is None:
        if terminology.codesystem(f"{system}|{version}" if version else system) is None:
            raise _unknown("CodeSystem", f"{system}|{version}" if version else system)
        raise NotFound(f"Code '{code[:100]}' is not in the code system {system}", expression="code")
    wanted = set(params.get("property", []))
    out: list[tuple[str, Any]] = [
        ("name", found["name"]),
        ("version", found.get("version")),
        ("display", found.get("display", code)),
    ]
    for d in found.get("designation", []):
        language = Typed("code", d["language"]) if d.get("language") else None
        use = Typed("Coding", d["use"]) if d.get("use") else None
        out.append(("designation", [("language", language), ("use", use), ("value", d["value"])]))
    properties = [
        (p["code"], key[5:], p[key])
        for p in found.get("property", [])
        for key in p
        if key.startswith("value")
    ]
    if found.get("definition"):
        properties.insert(0, ("definition", "String", found["definition"]))
    properties += [(r, "Code", other) for r in ("parent", "child") for other in found.get(r, [])]
    for name, type, value in properties:
        if not wanted or name in wanted:
            type = (
                type if type[0].lower() + type[1:] not in PRIMITIVES else type[0].lower() + type[1:]
            )
            parts = [("code", Typed("code", name)), ("value", Typed(type, value))]
            out.append(("property", parts))
    return to_parameters(out)


# -- ConceptMap/$translate ---------------------------------------------------------------------


def translate(
    terminology: Terminology, instance: dict[str, Any] | None, params: Params
) -> dict[str, Any]:
    """``ConceptMap/$translate``: the mappings of a code / Coding / CodeableConcept."""
    url = _canonical(params, "conceptMapVersion")
    inline = first(params, "conceptMap")
    if sum(x is not None for x in (instance, url, inline)) > 1:
        raise BadRequest("Give one ConceptMap: the instance, url or conceptMap", expression="url")
    conceptmap: str | dict[str, Any] | None = instance or inline or url
    if isinstance(conceptmap, str) and terminology.conceptmap(conceptmap) is None:
        raise _unknown("ConceptMap", conceptmap)
    inputs = _code_inputs(params, "system")
    if inputs["code"] is not None:
        codings = [{"system": inputs.get("system"), "code": inputs["code"]}]
    elif inputs["coding"] is not None:
        codings = [inputs["coding"]]
    else:
        codings = [c for c in inputs["codeable_concept"].get("coding", []) if isinstance(c, dict)]
    matches: list[dict[str, Any]] = []
    for coding in codings:
        if not isinstance(coding.get("code"), str):
            raise BadRequest("Every coding to translate needs a code", expression="coding")
        found = terminology.translate(
            conceptmap,
            system=coding.get("system"),
            code=coding["code"],
            source=first(params, "source"),
            target=first(params, "target"),
            target_system=first(params, "targetsystem"),
        )
        matches += found or []
    result = Terminology.successful(matches)
    shown = ", ".join(f"{c.get('system') or ''}|{c.get('code')}".lstrip("|") for c in codings)
    out: list[tuple[str, Any]] = [("result", result)]
    if not result:
        out.append(("message", f"No mapping found for {shown}"))
    for m in matches:
        parts: list[tuple[str, Any]] = [("equivalence", Typed("code", m["equivalence"]))]
        if m.get("concept"):
            parts.append(("concept", Typed("Coding", m["concept"])))
        for key in ("product", "dependsOn"):
            for item in m.get(key, []):
                element = Typed("uri", item["element"]) if item.get("element") else None
                parts.append(
                    (key, [("element", element), ("concept", Typed("Coding", item["concept"]))])
                )
        parts.append(("source", Typed("uri", m["source"]) if m.get("source") else None))
        out.append(("match", parts))
    return to_parameters(out)


# (resource type, operation) -> (OperationDefinition id in profiles/operations/, handler); the
# definition alone says where each runs (the key names it for the unit tests' lookups)
TERMINOLOGY_OPERATIONS: dict[tuple[str, str], tuple[str, Handler]] = {
    ("ValueSet", "$expand"): ("ValueSet-expand", expand),
    ("ValueSet", "$validate-code"): ("ValueSet-validate-code", validate_code_valueset),
    ("CodeSystem", "$validate-code"): ("CodeSystem-validate-code", validate_code_codesystem),
    ("CodeSystem", "$lookup"): ("CodeSystem-lookup", lookup),
    ("ConceptMap", "$translate"): ("ConceptMap-translate", translate),
}


def _implementation(definition: str, handler: Handler) -> Implementation:
    def run(call: Call) -> dict[str, Any]:
        return handler(call.terminology, call.instance, call.params)

    return Implementation(definition, run)


IMPLEMENTATIONS = tuple(
    _implementation(definition, handler) for definition, handler in TERMINOLOGY_OPERATIONS.values()
)
