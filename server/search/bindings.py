"""The code system a ``code`` element carries implicitly: that of its required binding.

R4 gives a ``code`` element no system: the system is the one of the ValueSet it is bound to
(``Task.status`` -> ``http://hl7.org/fhir/task-status``). Token rows of such a code are written
with that system when the binding is ``required`` (``server/fhir/data/
required-binding-valuesets.json``) and every code of the ValueSet comes from one CodeSystem, so
the forms of search.html#token hold: ``status=completed`` (any system),
``status=http://hl7.org/fhir/task-status|completed``, ``status=http://hl7.org/fhir/task-status|``
match; ``status=|completed`` (explicitly no system) does not.

A search parameter gets a system when its expression names one simple path for the resource
type (``Task.status``, ``Patient.address.use``: the path is followed through backbone elements
and complex datatypes, ``Address.use``) ending at such an element.
"""

from __future__ import annotations

import re
from functools import cache

from server.fhir.conformance import conformance
from server.fhir.definitions import r4_schema, required_binding_valuesets

_PATH = re.compile(r"^[A-Z][A-Za-z]*(\.[a-z][A-Za-z0-9]*)+$")


def bound_system(type: str, expression: str) -> str | None:
    """The code system of the values ``expression`` selects on a ``type``, when they are codes
    of a required binding to one CodeSystem; None otherwise."""
    paths = [part.strip().strip("()").strip() for part in expression.split("|")]
    mine = [path for path in paths if path.split(".", 1)[0] == type]
    if len(mine) != 1 or not _PATH.match(mine[0]):
        return None
    return _system(mine[0])


@cache
def _system(path: str) -> str | None:
    element = _element(path)
    if element is None:
        return None
    valueset = required_binding_valuesets().get(element)
    if valueset is None:
        return None
    codes = conformance().terminology.expand(valueset)
    systems = {system for system, _ in codes or ()}
    return systems.pop() if len(systems) == 1 else None


def _element(path: str) -> str | None:
    """The path of the element definition ``path`` reaches: through backbone elements it
    stays in the resource (``Bundle.entry.request.method``), into a complex datatype it
    continues there (``Patient.address.use`` -> ``Address.use``); None for an unknown name or a
    step into a primitive."""
    definitions = r4_schema().get("definitions", {})
    first, *names = path.split(".")
    where, owner = first, first
    for index, name in enumerate(names):
        spec = definitions.get(owner, {}).get("properties", {}).get(name)
        if spec is None:
            return None
        item = spec.get("items", spec)
        target = str(item.get("$ref", "")).rsplit("/", 1)[-1]
        if index == len(names) - 1:  # a code: the schema enumerates it or refers to code
            return f"{where}.{name}" if target == "code" or "enum" in item else None
        if "_" in target:  # a backbone element: Bundle_Entry
            where = f"{where}.{name}"
        elif target[:1].isupper():  # a complex datatype
            where = target
        else:
            return None
        owner = target
    return None
