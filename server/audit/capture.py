"""What one HTTP interaction was, as an audit record: its interaction code and action from
the method and path, the entities and patients from the answer's body.

Parsing happens where the record is built (the audit writer's thread in batch mode), never
before the answer is sent.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

from server.fhir.ids import new_id
from server.store.base import AuditRecord

MAX_BODY = 16 * 1024 * 1024  # larger answers are recorded without their entities
_PATIENT_REFS = ("subject", "patient", "beneficiary", "for", "individual")
_TYPE = re.compile(r"[A-Z][A-Za-z]+")
_PATIENT_PARAMS = ("patient", "subject", "beneficiary")


@dataclass(slots=True)
class Captured:
    """An answered request, as the audit layer saw it."""

    recorded: int
    method: str
    path: str
    query: str
    status: int
    client: str | None
    organization: str | None
    user: str | None
    purposes: tuple[str, ...]
    address: str | None
    request_id: str | None
    body: bytes | None
    gzipped: bool


def interaction(method: str, path: str) -> tuple[str, str]:
    """The interaction code (FHIR restful-interaction, or ``operation``/``transaction``)
    and the BALP action (C R U D E) of ``method`` on ``path`` (below ``/fhir``)."""
    parts = [p for p in path.split("/") if p][1:]  # without "fhir"
    if any(p.startswith("$") for p in parts):
        return "operation", "E"
    if method in ("GET", "HEAD"):
        if not parts:
            return "search-system", "R"
        if parts[0] == "_history":
            return "history-system", "R"
        if len(parts) == 1:
            return "search-type", "R"
        if parts[1] == "_history":
            return "history-type", "R"
        if len(parts) == 2:
            return "read", "R"
        if len(parts) == 3 and parts[2] == "_history":
            return "history-instance", "R"
        if len(parts) == 4 and parts[2] == "_history":
            return "vread", "R"
        return "read", "R"
    if method == "POST":
        if not parts:
            return "transaction", "E"
        if parts[-1] == "_search":
            return ("search-type" if len(parts) == 2 else "search-system"), "R"
        return "create", "C"
    if method == "PUT":
        return "update", "U"
    if method == "PATCH":
        return "patch", "U"
    if method == "DELETE":
        return "delete", "D"
    return method.lower(), "E"


def audited(method: str, path: str, status: int) -> bool:
    """Whether the middleware records this answer: every read, search, history and
    operation, and every refused or failed write (a committed write is recorded from the
    outbox, in its own transaction)."""
    code, action = interaction(method, path)
    if action in ("C", "U", "D"):
        return status >= 400
    return True


def record(c: Captured) -> AuditRecord:
    code, action = interaction(c.method, c.path)
    entities: list[tuple[str, str, int | None]] = []
    patients: set[str] = set()
    for resource in _returned(c):
        rtype, rid = resource.get("resourceType"), resource.get("id")
        if not isinstance(rtype, str) or not isinstance(rid, str):
            continue
        if rtype in ("OperationOutcome", "Bundle", "CapabilityStatement"):
            continue
        version = str((resource.get("meta") or {}).get("versionId"))
        entities.append((rtype, rid, int(version) if version.isdigit() else None))
        patients |= _patients(rtype, rid, resource)
    parts = [p for p in c.path.split("/") if p][1:]
    if not entities and len(parts) >= 2 and _TYPE.fullmatch(parts[0]) and not parts[1].startswith(
        ("$", "_")
    ):  # the target of a refused or failed interaction, as requested
        entities.append((parts[0], parts[1], None))
    if len(parts) >= 2 and parts[0] == "Patient" and not parts[1].startswith(("$", "_")):
        patients.add(parts[1])
    for name, value in parse_qsl(c.query):
        if name.split(":")[0] in _PATIENT_PARAMS:
            ref = value.split("|")[0]
            if ref.startswith("Patient/"):
                patients.add(ref[8:])
            elif name.split(":")[0] == "patient" and "/" not in ref:
                patients.add(ref)
    return AuditRecord(
        id=new_id().replace("-", ""),  # time-ordered: a batch lands together
        recorded=c.recorded,
        interaction=code,
        action=action,
        status=c.status,
        client=c.client,
        organization=c.organization,
        user=c.user,
        purposes=c.purposes,
        address=c.address,
        method=c.method,
        path=c.path,
        query=c.query or None,
        request_id=c.request_id,
        entities=tuple(dict.fromkeys(entities)),
        patients=tuple(sorted(patients)),
    )


def _returned(c: Captured) -> list[dict[str, Any]]:
    if not c.body or c.status >= 400 or len(c.body) > MAX_BODY:
        return []
    body = c.body
    try:
        if c.gzipped:
            body = gzip.decompress(body)
        parsed = orjson.loads(body)
    except (orjson.JSONDecodeError, OSError, EOFError):
        return []  # not JSON (NDJSON files, binaries): recorded without entities
    if not isinstance(parsed, dict):
        return []
    if parsed.get("resourceType") != "Bundle":
        return [parsed]
    found: list[dict[str, Any]] = []
    for entry in parsed.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict):
            found.append(resource)
            # a transaction/batch answer's nested Bundle (a search entry)
            if resource.get("resourceType") == "Bundle":
                found.extend(
                    e["resource"]
                    for e in resource.get("entry") or []
                    if isinstance(e, dict) and isinstance(e.get("resource"), dict)
                )
    return found


def _patients(rtype: str, rid: str, resource: dict[str, Any]) -> set[str]:
    if rtype == "Patient":
        return {rid}
    found = set()
    for name in _PATIENT_REFS:
        value = resource.get(name)
        for ref in value if isinstance(value, list) else [value]:
            text = ref.get("reference") if isinstance(ref, dict) else None
            if isinstance(text, str) and text.startswith("Patient/"):
                found.add(text[8:].split("/")[0])
    return found
