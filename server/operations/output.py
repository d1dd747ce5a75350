"""Output policies: what of an operation's answer computed from system reads reaches whom.

An operation may read with the system reader (``Call.system``: no principal narrows it) when
its answer must rest on the whole record — an eligibility determination judged on what the
caller happens to see would be a different determination. What it returns from those reads is
then decided part by part by an ``OutputPolicy``, by the caller's role and view:

* ``everyone``: parts any caller allowed to run the operation on its target receives (the
  outcomes: codes, results, the clauses they rest on);
* ``references``: Reference parts kept only when the caller may read the target (``Reader.
  visible`` of the door): evidence from a hidden resource is omitted;
* ``explained_by``: text parts (``explanation``) that describe the references of a sibling
  part: kept only when every one of those references is visible;
* ``operators``: parts only an unrestricted principal (``allow_all``) receives (data problems
  that quote what was read).

Any part the policy does not name is omitted for a restricted caller (deny by default). An
unrestricted caller receives the answer as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from server.fhir.references import local_target

Visible = Callable[[str, str], bool]


@dataclass(frozen=True, slots=True)
class OutputPolicy:
    everyone: frozenset[str]
    references: frozenset[str] = frozenset()
    explained_by: Mapping[str, str] = field(default_factory=dict)
    operators: frozenset[str] = frozenset()

    def apply(
        self, parameters: dict[str, Any], visible: Visible, base: str, *, restricted: bool
    ) -> dict[str, Any]:
        """``parameters`` (an output Parameters resource) as this caller may receive it."""
        if not restricted:
            return parameters
        kept = self._parts(parameters.get("parameter") or [], visible, base)
        out = {k: v for k, v in parameters.items() if k != "parameter"}
        return {**out, "parameter": kept} if kept else out

    def _parts(self, parts: list[dict[str, Any]], visible: Visible, base: str) -> list[Any]:
        hidden_of: dict[str, bool] = {}  # reference part name -> some of them hidden
        for part in parts:
            name = part.get("name", "")
            if name in self.references and not self._visible(part, visible, base):
                hidden_of[name] = True
        kept: list[dict[str, Any]] = []
        for part in parts:
            name = part.get("name", "")
            if name in self.references:
                if self._visible(part, visible, base):
                    kept.append(part)
            elif name in self.explained_by:
                if not hidden_of.get(self.explained_by[name], False):
                    kept.append(part)
            elif name in self.everyone:
                if "part" in part:
                    inner = self._parts(part["part"], visible, base)
                    part = {k: v for k, v in part.items() if k != "part"}
                    if inner:
                        part["part"] = inner
                kept.append(part)
        return kept

    @staticmethod
    def _visible(part: dict[str, Any], visible: Visible, base: str) -> bool:
        reference = (part.get("valueReference") or {}).get("reference")
        target = local_target(reference, base) if isinstance(reference, str) else None
        return target is not None and visible(*target)


def visible_only(value: Any, visible: Visible, base: str) -> Any:
    """``value`` (a stored result: Parameters, Bundle) without what the caller may not see now:
    every Parameters part or Bundle entry whose Reference (``valueReference``) or resource
    names a stored resource the door hides. Parts and entries without one are kept."""
    if isinstance(value, list):
        return [visible_only(v, visible, base) for v in value if not _hidden(v, visible, base)]
    if isinstance(value, dict):
        return {k: visible_only(v, visible, base) for k, v in value.items()}
    return value


def _hidden(item: Any, visible: Visible, base: str) -> bool:
    if not isinstance(item, dict):
        return False
    reference = (item.get("valueReference") or {}).get("reference")
    if isinstance(reference, str):
        target = local_target(reference, base)
        if target is not None and not visible(*target):
            return True
    resource = item.get("resource")
    if isinstance(resource, dict):
        type, id = resource.get("resourceType"), resource.get("id")
        if isinstance(type, str) and isinstance(id, str) and not visible(type, id):
            return True
    return False
