"""An audit record as a FHIR R4 ``AuditEvent`` in the IHE Basic Audit Log Patterns (BALP)
shape of a RESTful interaction: ``type`` rest, ``subtype`` the restful-interaction code,
``action``, ``recorded``, ``outcome`` (0 success, 4 minor failure: a 4xx answer, 8 serious
failure: a 5xx answer) with the HTTP status in ``outcomeDesc``, ``agent`` (the client as the
requestor with its network address, the organisation and the user it acts for, each with the
purposes of use), ``source`` (this server), ``entity`` (the query of a search; each resource
returned or written, with its version; each patient concerned) and ``purposeOfEvent``.
"""

from __future__ import annotations

import base64
from typing import Any

from server.fhir.instant import format_instant
from server.store.base import AuditRecord

EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
CLIENT_SYSTEM = "urn:calaim-fhir:client"
SOURCE_ROLE = {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]}


def outcome(status: int) -> str:
    return "0" if status < 400 else "4" if status < 500 else "8"


def audit_event(r: AuditRecord, base: str) -> dict[str, Any]:
    purposes = [{"coding": [{"system": ACT_REASON, "code": p}]} for p in r.purposes]
    agents: list[dict[str, Any]] = []
    if r.client:
        agent: dict[str, Any] = {
            "type": SOURCE_ROLE,
            "who": {"identifier": {"system": CLIENT_SYSTEM, "value": r.client}},
            "requestor": True,
        }
        if r.address:
            agent["network"] = {"address": r.address, "type": "2"}
        agents.append(agent)
    # whom the client acts for: the recipient of what was read, the author of what was written
    role = "AUT" if r.action in ("C", "U", "D") else "IRCP"
    for ref in (r.organization, r.user):
        if ref:
            agents.append(
                {
                    "type": {"coding": [{"system": PARTICIPATION, "code": role}]},
                    "who": {"reference": ref},
                    "requestor": not r.client,
                }
            )
    if not agents:  # an unauthenticated request: only where it came from
        agents.append(
            {
                "type": SOURCE_ROLE,
                "who": {"display": "unauthenticated"},
                "requestor": True,
                **({"network": {"address": r.address, "type": "2"}} if r.address else {}),
            }
        )
    if purposes:
        for agent in agents:
            agent["purposeOfUse"] = purposes
    entities: list[dict[str, Any]] = []
    if r.query and r.interaction.startswith("search"):
        entities.append(
            {
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
                "query": base64.b64encode(r.query.encode()).decode(),
            }
        )
    for rtype, rid, version in r.entities:
        ref = f"{rtype}/{rid}" + (f"/_history/{version}" if version is not None else "")
        entities.append(
            {
                "what": {"reference": ref},
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            }
        )
    for patient in r.patients:
        entities.append(
            {
                "what": {"reference": f"Patient/{patient}"},
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": r.id,
        "meta": {"lastUpdated": format_instant(r.recorded)},
        "type": {"system": EVENT_TYPE, "code": "rest", "display": "Restful Operation"},
        "subtype": [{"system": INTERACTION, "code": r.interaction}],
        "action": r.action,
        "recorded": format_instant(r.recorded),
        "outcome": outcome(r.status),
        "outcomeDesc": f"HTTP {r.status}",
        "agent": agents,
        "source": {
            "observer": {"display": base},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    }
    if purposes:
        event["purposeOfEvent"] = purposes
    if entities:
        event["entity"] = entities
    return event
