"""Extensions checked wherever they occur: the extension definitions' rules and their context.

Every ``extension``/``modifierExtension`` of a resource (of any element, of primitives through
``_name``, of contained resources and of other extensions) whose ``url`` is one of our extension
definitions is validated against that definition, and its ``context[]`` must allow the element
it sits on. A context of type ``element`` allows an element when its expression is the
element's path (``CarePlan``, ``Patient.address``, ``Observation.value[x]``) or the name of the
element's type or of a type it specialises (``Address``, ``Element``, ``Resource``,
``DomainResource``, ``BackboneElement``); a context of type ``extension`` allows the extension
inside the extension with that URL. Use elsewhere: error ``structure``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from server.fhir.element_paths import ElementModel
from server.fhir.outcome import Issue
from server.fhir.profile_rules import Run

Check = Callable[[dict[str, Any], str, Run], None]
_EXTENSIONS = ("extension", "modifierExtension")
_EXTENSION, _SHADOW, _RESOURCE, _COMPLEX = range(4)
_Step = tuple[int, str, str, str]  # (kind, FHIRPath step, type, element name)


@dataclass(frozen=True, slots=True)
class ExtensionDefinition:
    """A compiled extension definition: its check and where it may be used."""

    id: str
    check: Check
    elements: frozenset[str]  # element paths and type names of type-``element`` contexts
    extensions: frozenset[str]  # URLs of type-``extension`` contexts


class ExtensionWalk:
    """Finds the extensions of a resource and checks those we define."""

    def __init__(self, model: ElementModel, definitions: Mapping[str, ExtensionDefinition]):
        self.model = model
        self.definitions = definitions
        self._plans: dict[str, dict[str, _Step]] = {}

    def check(self, resource: dict[str, Any], where: str, run: Run) -> None:
        type = resource.get("resourceType")
        if self.definitions and isinstance(type, str):
            self._visit(resource, type, type, where, None, run)

    def _allowed(
        self, definition: ExtensionDefinition, type: str, path: str, owner: str | None
    ) -> bool:
        if owner is not None and owner in definition.extensions:
            return True
        contexts = definition.elements
        if path in contexts or f"{path}[x]" in contexts:
            return True
        return any(name in contexts for name in self.model.ancestors(type))

    def _extension(
        self, ext: Any, type: str, path: str, expression: str, owner: str | None, run: Run
    ) -> None:
        if ext.__class__ is not dict:
            return
        url = ext.get("url")
        definition = self.definitions.get(url) if url.__class__ is str else None
        if definition is not None:
            if not self._allowed(definition, type, path, owner):
                allowed = ", ".join(sorted(definition.elements | definition.extensions))
                message = (
                    f"extension {url} is not allowed on {path} (context: {allowed}) "
                    f"(extension {definition.id})"
                )
                run.issues.append(Issue("error", "structure", message, expression))
            definition.check(ext, expression, run)
        self._visit(ext, "Extension", f"{path}.extension", expression, url, run)

    def _plan(self, type: str) -> dict[str, _Step]:
        """What to do with each JSON key of a value of ``type``: keys of primitive values
        (which hold no extensions) are left out."""
        known = self._plans.get(type)
        if known is not None:
            return known
        plan: dict[str, _Step] = {}
        for key, (info, child_type) in self.model.by_json(type).items():
            if info.array:
                name = info.name
            elif info.choice:
                name = f"{info.base}.ofType({child_type})"
            else:
                name = info.name
            if self.model.is_primitive(child_type):
                plan[f"_{key}"] = (_SHADOW, name, child_type, info.base)
            elif child_type == "Resource":
                plan[key] = (_RESOURCE, name, child_type, info.base)
            else:
                plan[key] = (_COMPLEX, name, child_type, info.base)
        plan.update({key: (_EXTENSION, key, "", "") for key in _EXTENSIONS})
        self._plans[type] = plan
        return plan

    def _visit(
        self,
        value: dict[str, Any],
        type: str,
        path: str,
        expression: str,
        owner: Any,
        run: Run,
    ) -> None:
        plan = self._plan(type)
        for key, child in value.items():
            step = plan.get(key)
            if step is None:
                continue
            kind, name, child_type, element = step
            if kind == _EXTENSION:
                if child.__class__ is list:
                    for i, ext in enumerate(child):
                        here = f"{expression}.{key}[{i}]"
                        self._extension(ext, type, path, here, owner, run)
                continue
            many = child.__class__ is list
            for i, item in enumerate(child if many else (child,)):
                if item.__class__ is not dict:
                    continue
                here = f"{expression}.{name}[{i}]" if many else f"{expression}.{name}"
                if kind == _SHADOW:
                    for j, ext in enumerate(item.get("extension") or ()):
                        self._extension(
                            ext,
                            child_type,
                            f"{path}.{element}",
                            f"{here}.extension[{j}]",
                            None,
                            run,
                        )
                elif kind == _RESOURCE:
                    resource_type = item.get("resourceType")
                    if resource_type.__class__ is str:
                        self._visit(item, resource_type, resource_type, here, None, run)
                else:
                    self._visit(item, child_type, f"{path}.{element}", here, None, run)
