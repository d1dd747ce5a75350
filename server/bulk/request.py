"""The kick-off request of ``$export`` (Bulk Data Access 2.0): its parameters, checked.

``GET [base]/$export``, ``[base]/Patient/$export``, ``[base]/Group/[id]/$export`` with
query parameters, or ``POST`` with a ``Parameters`` resource (the same names; ``patient``
only there, as references). Parameters:

* ``_outputFormat``: ``application/fhir+ndjson`` (default), ``application/ndjson`` or
  ``ndjson``; anything else 400;
* ``_type``: comma-separated resource types (repeatable); an unknown type 400;
* ``_since``: an instant (without an offset: read in the server's zone, as every FHIR date
  is); only resources last updated at or after it;
* ``_typeFilter``: ``Type?search-parameters`` (repeatable; several for one type are
  alternatives): only resources of that type that match one of them; a type that has a filter
  gets only what its filters match. Chains and ``_has`` are refused (they are evaluated on the
  version as of the export, where no other resource's past is at hand);
* ``patient`` (POST, Patient and Group level): only these patients' data.

``_elements``, ``includeAssociatedData`` and any other parameter are not supported: 400, or
ignored (and reported in the 202's OperationOutcome) with ``Prefer: handling=lenient``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from server.auth.interactions import Interaction
from server.auth.policy import Access
from server.errors import BadRequest, Forbidden, InvalidSearch
from server.fhir.conformance import CONFORMANCE_TYPES
from server.fhir.instant import date_range
from server.fhir.resource_types import RESOURCE_TYPES
from server.search.match import RowSource, compile_matcher
from server.search.parse import SearchContext, parse_criteria_string
from server.search.query import Criteria

Level = Literal["system", "patient", "group"]
OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
EXPORTABLE = tuple(sorted(RESOURCE_TYPES - CONFORMANCE_TYPES))
"""The types an export reads (the conformance resources are the server's definitions, not
data it stores)."""
_KNOWN = frozenset({"_outputFormat", "_type", "_since", "_typeFilter", "patient"})
_FORMAT_PARAMS = frozenset({"_format", "_pretty"})


@dataclass(frozen=True)
class ExportRequest:
    """What one export reads. ``patients``: the Patient ids whose data it is limited to
    (Group members, or ``patient``); None: every patient's (Patient level) or everything
    (system level). ``type_filters``: per type, the ``_typeFilter`` query strings."""

    level: Level
    types: tuple[str, ...]
    since: int | None = None
    type_filters: dict[str, tuple[str, ...]] = field(default_factory=dict)
    patients: tuple[str, ...] | None = None
    group: str | None = None
    ignored: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "types": list(self.types),
            "since": self.since,
            "type_filters": {k: list(v) for k, v in self.type_filters.items()},
            "patients": None if self.patients is None else list(self.patients),
            "group": self.group,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportRequest:
        patients = data.get("patients")
        return cls(
            level=data["level"],
            types=tuple(data["types"]),
            since=data.get("since"),
            type_filters={k: tuple(v) for k, v in data.get("type_filters", {}).items()},
            patients=None if patients is None else tuple(patients),
            group=data.get("group"),
        )


def parameters_pairs(body: Any) -> list[tuple[str, str]]:
    """The ``(name, value)`` pairs of a POSTed ``Parameters`` kick-off (a reference's value:
    its ``reference``)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise BadRequest("A POST kick-off carries a Parameters resource", expression="Parameters")
    pairs: list[tuple[str, str]] = []
    for n, param in enumerate(body.get("parameter") or []):
        name = param.get("name") if isinstance(param, dict) else None
        values = [
            v
            for k, v in (param.items() if isinstance(param, dict) else ())
            if k.startswith("value")
        ]
        if not isinstance(name, str) or len(values) != 1:
            raise BadRequest(
                "Each parameter has a name and one value", expression=f"Parameters.parameter[{n}]"
            )
        value = values[0]
        if isinstance(value, dict):
            value = value.get("reference")
        if not isinstance(value, str):
            raise BadRequest(
                f"Parameter '{name}' has no usable value", expression=f"Parameters.parameter[{n}]"
            )
        pairs.append((name, value))
    return pairs


def parse_export(
    level: Level,
    pairs: Iterable[tuple[str, str]],
    context: SearchContext,
    indexer: RowSource,
    *,
    lenient: bool = False,
    posted: bool = False,
) -> ExportRequest:
    """The checked request of a kick-off at ``level`` (400 with the parameter named in the
    issue's ``expression`` for every bad value)."""
    types: list[str] = []
    filters: dict[str, list[str]] = {}
    since: int | None = None
    patients: list[str] = []
    ignored: list[str] = []
    for name, value in pairs:
        if name in _FORMAT_PARAMS:
            continue
        if name not in _KNOWN or (name == "patient" and (not posted or level == "system")):
            if lenient:
                ignored.append(name)
                continue
            raise BadRequest(
                f"$export does not support the parameter '{name[:40]}'", expression=name
            )
        if name == "_outputFormat":
            if value not in OUTPUT_FORMATS:
                raise BadRequest(
                    f"_outputFormat '{value[:60]}' is not supported: use application/fhir+ndjson",
                    expression="_outputFormat",
                )
        elif name == "_type":
            for type in (t.strip() for t in value.split(",")):
                types.append(_type(type, "_type"))
        elif name == "_since":
            found = date_range(value, context.zone) if "T" in value else None
            if found is None:
                raise BadRequest(
                    f"_since '{value[:60]}' is not an instant (yyyy-mm-ddThh:mm:ss+zz:zz)",
                    expression="_since",
                )
            since = found[0]
        elif name == "_typeFilter":
            type, mark, query = value.partition("?")
            if not mark:
                raise BadRequest(
                    f"_typeFilter '{value[:60]}' is not Type?parameters", expression="_typeFilter"
                )
            _type(type, "_typeFilter")
            _filter(type, query, context, indexer)
            filters.setdefault(type, []).append(query)
        else:  # patient
            kind, slash, id = value.partition("/")
            if kind != "Patient" or not slash or not id:
                raise BadRequest(
                    f"patient '{value[:60]}' is not a Patient reference", expression="patient"
                )
            patients.append(id)
    if types:
        stray = sorted(set(filters) - set(types))
        if stray:
            raise BadRequest(
                f"_typeFilter names {', '.join(stray)}, which _type leaves out",
                expression="_typeFilter",
            )
    return ExportRequest(
        level=level,
        types=tuple(dict.fromkeys(types)) or EXPORTABLE,
        since=since,
        type_filters={k: tuple(v) for k, v in filters.items()},
        patients=tuple(dict.fromkeys(patients)) if patients else None,
        ignored=tuple(dict.fromkeys(ignored)),
    )


def _type(type: str, parameter: str) -> str:
    if type not in RESOURCE_TYPES:
        raise BadRequest(f"'{type[:60]}' is not a resource type", expression=parameter)
    if type in CONFORMANCE_TYPES:
        raise BadRequest(
            f"{type} is a definition of this server, not exported data", expression=parameter
        )
    return type


def _filter(type: str, query: str, context: SearchContext, indexer: RowSource) -> Criteria:
    try:
        criteria = parse_criteria_string(type, query, context)
        compile_matcher(criteria)(type, {"resourceType": type}, indexer)
    except InvalidSearch as exc:
        raise BadRequest(
            f"_typeFilter '{type}?{query[:60]}': {exc}", expression="_typeFilter"
        ) from exc
    return criteria


def type_filter(type: str, queries: Sequence[str], context: SearchContext) -> tuple[Criteria, ...]:
    """The criteria of a type's ``_typeFilter`` queries (checked at the kick-off)."""
    return tuple(parse_criteria_string(type, q, context) for q in queries)


def readable_types(access: Access, types: Sequence[str], explicit: bool) -> tuple[str, ...]:
    """The types of ``types`` an export reads for the caller: an export reads each type's
    history (``history-type``), so a type the caller's access refuses is left out of an
    export that named no ``_type``; one it named answers 403."""
    refused = [t for t in types if not access.narrowing(Interaction.HISTORY_TYPE, t).permitted]
    if refused and explicit:
        raise Forbidden(f"Not permitted: export of {', '.join(refused[:10])}", expression="_type")
    return tuple(t for t in types if t not in refused)
