"""The CapabilityStatement, generated from the server's registries (never hand-written).

Resource types come from ``fhir.resource_types``, search parameters from ``search.params``,
interactions and formats from what ``routes`` implements; the software name and version from
the installed distribution.
"""

from __future__ import annotations

from datetime import date
from functools import cache
from importlib.metadata import version
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from server.api import http, routes
from server.api.context import note, settings_of
from server.fhir.resource_types import RESOURCE_TYPES
from server.search.params import params_for
from server.settings import Settings

router = APIRouter()

# the CapabilityStatement interaction codes each route (by operationId) implements
_TYPE_CODES = {
    "read": "read",
    "vread": "vread",
    "update": "update",
    "patch": "patch",
    "delete": "delete",
    "historyInstance": "history-instance",
    "historyType": "history-type",
    "create": "create",
    "searchType": "search-type",
}
_SYSTEM_CODES = {
    "transactionOrBatch": ("transaction", "batch"),
    "historySystem": ("history-system",),
}


def _implemented() -> set[str]:
    return {getattr(route, "operation_id", None) or "" for route in routes.router.routes}


def type_interactions() -> list[str]:
    """The type and instance interactions the routes implement, in the spec's order."""
    present = _implemented()
    return [code for op, code in _TYPE_CODES.items() if op in present]


def system_interactions() -> list[str]:
    present = _implemented()
    return [code for op, codes in _SYSTEM_CODES.items() if op in present for code in codes]


def _resource(type: str, settings: Settings) -> dict[str, Any]:
    return {
        "type": type,
        "interaction": [{"code": code} for code in type_interactions()],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "not-supported",
        "conditionalUpdate": True,
        "conditionalDelete": "multiple" if settings.conditional_delete_multiple else "single",
        "referencePolicy": ["literal", "logical"],
        "searchParam": [
            {"name": p.name, "type": p.type, "documentation": p.description}
            for p in params_for(type)
        ],
    }


@cache
def capability_statement(settings: Settings) -> bytes:
    software = version("calaim-fhir")
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date.today().isoformat(),
        "publisher": "calaim-fhir",
        "kind": "instance",
        "software": {"name": "calaim-fhir", "version": software},
        "implementation": {
            "description": "calaim-fhir: FHIR R4 server for Medi-Cal ECM and Community Supports",
            "url": settings.fhir_base,
        },
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "References need not resolve when a resource is written "
                    "(referencePolicy has no 'enforced'); "
                    "deleting a resource does not check references to it. "
                    "Paging is keyset-based: follow the Bundle links."
                ),
                "security": {
                    "description": "No authentication yet: the server listens on loopback only "
                    "unless started with --insecure-no-auth."
                },
                "resource": [_resource(t, settings) for t in sorted(RESOURCE_TYPES)],
                "interaction": [{"code": code} for code in system_interactions()],
            }
        ],
    }
    return orjson.dumps(statement)


@router.get("/metadata", operation_id="capabilities", summary="The CapabilityStatement")
async def metadata(request: Request) -> Response:
    note(request, "capabilities", None, None)
    http.check_accept(request)
    body = http.reformat(capability_statement(settings_of(request)), http.pretty(request))
    return Response(body, media_type=http.FHIR_JSON)
