"""A member's data as the eligibility rules read it: the Patient and the resources about them.

Evidence names each resource by ``ref``: ``Type/id`` for stored resources, the entry's
``fullUrl`` for data sent inline. :data:`PATIENT_REFERENCES` is the one place that says which
element ties each resource type to the member (and which search parameter indexes it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Resource = dict[str, Any]

#: resource type -> (element naming the member, search parameter indexing that element)
PATIENT_REFERENCES: Mapping[str, tuple[str, str]] = {
    "Coverage": ("beneficiary", "beneficiary"),
    "Encounter": ("subject", "patient"),
    "Condition": ("subject", "patient"),
    "Observation": ("subject", "patient"),
    "Procedure": ("subject", "patient"),
    "EpisodeOfCare": ("patient", "patient"),
}


@dataclass(frozen=True, slots=True)
class Entry:
    resource: Resource
    ref: str  # how evidence names it


@dataclass(slots=True)
class MemberRecord:
    patient: Entry
    by_type: dict[str, list[Entry]] = field(default_factory=dict)

    @property
    def patient_ref(self) -> str:
        return self.patient.ref

    def of(self, type: str) -> list[Entry]:
        return self.by_type.get(type, [])

    def add(self, entry: Entry) -> None:
        self.by_type.setdefault(entry.resource["resourceType"], []).append(entry)

    def resolve(self, reference: str) -> Entry | None:
        """An entry of this record named by ``reference`` (``Type/id`` or a fullUrl)."""
        for entries in self.by_type.values():
            for entry in entries:
                if entry.ref == reference:
                    return entry
        return None


def member_reference(resource: Mapping[str, Any]) -> str | None:
    """The reference that ties ``resource`` to its member (None for other types)."""
    spec = PATIENT_REFERENCES.get(resource.get("resourceType", ""))
    if spec is None:
        return None
    target = resource.get(spec[0])
    if isinstance(target, dict) and isinstance(target.get("reference"), str):
        return str(target["reference"])
    return None


def record_of(patient: Entry, entries: Iterable[Entry], names: Iterable[str] = ()) -> MemberRecord:
    """The record of ``patient``: the entries whose member reference is the patient's ``ref``
    or one of its other ``names`` (e.g. ``Patient/<id>`` of an inline Patient)."""
    aliases = {patient.ref, *names}
    record = MemberRecord(patient)
    for entry in entries:
        if member_reference(entry.resource) in aliases:
            record.add(entry)
    return record
