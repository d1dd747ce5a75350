"""The CapabilityStatement, generated from the server's registries (never hand-written).

Profiles (``supportedProfile``), operations and the package (``implementationGuide``) come
from the conformance resources of ``profiles/`` and the operation table.

Resource types come from ``fhir.resource_types``, search parameters (with their definitions),
includes and reverse includes from the search registry (parameters waiting for a reindex are
left out),
interactions and formats from what ``routes`` implements; the software name and version from
the installed distribution.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date
from functools import cache, lru_cache
from importlib.metadata import version
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from server.api import http, routes
from server.api.context import note, services_of, settings_of
from server.api.interactions import read_shape
from server.errors import InvalidSearch
from server.fhir.conformance import CANONICAL_BASE, CONFORMANCE_TYPES, Conformance, conformance
from server.fhir.resource_types import RESOURCE_TYPES
from server.fhir.summary import shape
from server.operations.registry import Operation, operations
from server.search.registry import Registry
from server.settings import Settings
from server.subscriptions.capability import subscription_capability

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
    "searchSystem": ("search-system",),
    "historySystem": ("history-system",),
}
_SYSTEM_PARAMS = ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source")
_BULK = "http://hl7.org/fhir/uv/bulkdata"
# Bulk Data $export (``api/bulk_export.py``): per level, its OperationDefinition
_EXPORTS = {
    None: f"{_BULK}/OperationDefinition/export",
    "Patient": f"{_BULK}/OperationDefinition/patient-export",
    "Group": f"{_BULK}/OperationDefinition/group-export",
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


def _search_param(registry: Registry, type: str, code: str) -> dict[str, Any]:
    param = registry.for_type(type)[code]
    out = {"name": code, "definition": param.url, "type": param.type}
    if param.description:
        out["documentation"] = param.description
    return out


def _reverse_includes(registry: Registry) -> dict[str, list[str]]:
    """``{target type: ["Source:param", ...]}`` of every reference parameter."""
    out: dict[str, list[str]] = {t: [] for t in RESOURCE_TYPES}
    for source in sorted(RESOURCE_TYPES):
        for code, param in sorted(registry.for_type(source).items()):
            if param.type != "reference":
                continue
            targets = RESOURCE_TYPES if "Resource" in param.targets else param.targets
            for target in targets:
                if target in out:
                    out[target].append(f"{source}:{code}")
    return out


_READ_ONLY = frozenset({"read", "vread", "history-instance", "history-type", "search-type"})


def _profiles(definitions: Conformance) -> dict[str, list[str]]:
    """``{resource type: [our profile URLs]}``."""
    out: dict[str, list[str]] = {}
    for sd in definitions.local("StructureDefinition"):
        if sd.get("kind") == "resource" and sd.get("derivation") == "constraint":
            out.setdefault(sd["type"], []).append(sd["url"])
    return {t: sorted(urls) for t, urls in out.items()}


def _entries(where: Callable[[Operation], bool]) -> list[dict[str, Any]]:
    """``operation`` entries (name, definition URL) of the registered operations ``where``
    holds for, from their OperationDefinitions, sorted by name."""
    out = [{"name": op.name, "definition": op.url} for op in operations() if where(op)]
    return sorted(out, key=lambda o: o["name"])


def _operations(type: str) -> list[dict[str, Any]]:
    out = _entries(lambda op: op.runs_at("type", type) or op.runs_at("instance", type))
    if type in _EXPORTS:
        out.append({"name": "export", "definition": _EXPORTS[type]})
    return sorted(out, key=lambda o: o["name"])


def _system_operations() -> list[dict[str, Any]]:
    """``rest.operation``: the system-level operations (``[base]/$name``)."""
    out = _entries(lambda op: op.runs_at("system"))
    out.append({"name": "export", "definition": _EXPORTS[None]})
    return sorted(out, key=lambda o: o["name"])


def _totals(settings: Settings) -> str:
    """How Bundle.total is counted, under the configured default."""
    text = (
        "Bundle.total is exact with _total=accurate, _summary=count or _count=0; "
        "_total=estimate is the database's estimate (PostgreSQL planner statistics; the exact "
        "count on SQLite and for a caller who may not see every resource). "
    )
    if settings.default_total == "accurate":
        return text + "Every other search carries the exact count too."
    if settings.default_total == "none":
        return text + "Other searches carry no total."
    return text + (
        "Every other search carries the exact count when counting is cheap (a search clause or "
        "the searched types hold fewer than 1,000 index entries); otherwise the estimate on "
        "PostgreSQL for a caller who may see every resource, and no total on SQLite or for "
        "other callers, so a page costs what it holds."
    )


def _documentation(settings: Settings) -> str:
    text = (
        "References need not resolve when a resource is written "
        "(referencePolicy has no 'enforced'); "
        "deleting a resource does not check references to it. "
        "Paging is keyset-based: follow the Bundle links. "
        "Search values are indexed when a resource is written; dates without an "
        f"offset are read in {settings.search_timezone}. Unknown search parameters "
        "are refused (400) unless the request has Prefer: handling=lenient. "
        "Conditional references (Type?query) are resolved in every write, batch entries "
        "included, and never stored unresolved; POST [type]?criteria is a conditional create "
        "like If-None-Exist (see docs/clients.md). HEAD is answered on every GET URL; "
        "responses of 4 KiB or more are gzip-compressed when Accept-Encoding allows it. "
        + _totals(settings)
    )
    long_running = sorted({f"${op.name}" for op in operations() if op.long_running})
    if long_running:
        text += (
            f" Long-running operations ({', '.join(long_running)}) accept "
            "Prefer: respond-async (202, then poll the Content-Location URL "
            "[base]/_async/<id>; DELETE cancels); results are kept "
            f"{settings.async_retention_hours:g} hours."
        )
    return text


def _resource(
    type: str,
    settings: Settings,
    registry: Registry,
    revincludes: list[str],
    profiles: dict[str, list[str]],
) -> dict[str, Any]:
    params = registry.for_type(type)
    interactions = type_interactions()
    if type in CONFORMANCE_TYPES:
        interactions = [code for code in interactions if code in _READ_ONLY]
    out: dict[str, Any] = {
        "type": type,
        "interaction": [{"code": code} for code in interactions],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "not-supported",
        "conditionalUpdate": True,
        "conditionalDelete": "multiple" if settings.conditional_delete_multiple else "single",
        "referencePolicy": ["literal", "logical"],
        "searchInclude": [
            "*",
            *(f"{type}:{c}" for c, p in sorted(params.items()) if p.type == "reference"),
        ],
        "searchRevInclude": revincludes,
        "searchParam": [_search_param(registry, type, code) for code in sorted(params)],
    }
    if type in profiles:
        out["supportedProfile"] = profiles[type]
    if type in CONFORMANCE_TYPES:
        for key in ("updateCreate", "conditionalCreate", "conditionalUpdate"):
            out[key] = False
        out["conditionalDelete"] = "not-supported"
        out["documentation"] = (
            "The server's definitions (the calaim.fhir.ecm package and the R4 base definitions "
            "it uses): read-only, writes answer 405."
        )
    ops = _operations(type)
    if ops:
        out["operation"] = ops
    if type == "Subscription":
        ours = subscription_capability(settings.smtp_host is not None)
        ours["operation"] = [*out.get("operation", []), *ours["operation"]]
        out.update(ours)
    return out


def _security(settings: Settings) -> dict[str, Any]:
    """``rest.security``: SMART (the authorize and token endpoints in the SMART oauth-uris
    extension, which clients such as fhirclient read), or none with authentication off."""
    if settings.auth == "off":
        return {
            "cors": bool(settings.allowed_origins),
            "description": "Authentication is off (CALAIM_FHIR_AUTH=off): only loopback "
            "requests are answered; see docs/security.md.",
        }
    base = settings.fhir_base
    return {
        "cors": bool(settings.allowed_origins),
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ],
                "text": "SMART backend services (client_credentials, private_key_jwt) and "
                "standalone launch (authorization_code with PKCE)",
            }
        ],
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": "authorize", "valueUri": f"{base}/auth/authorize"},
                    {"url": "token", "valueUri": f"{base}/auth/token"},
                ],
            }
        ],
        "description": "Every request but discovery needs a SMART access token (backend "
        f"services or a launch); see {base}/.well-known/smart-configuration and docs/security.md.",
    }


def capability_statement(settings: Settings, registry: Registry) -> bytes:
    """The statement, built once per configuration and set of searchable parameters."""
    return _statement(settings, registry, registry.pending)


@lru_cache(maxsize=16)  # per application (its registry), a few at a time in tests
def _statement(settings: Settings, registry: Registry, pending: frozenset[str]) -> bytes:
    software = version("calaim-fhir")
    revincludes = _reverse_includes(registry)
    definitions = conformance()
    profiles = _profiles(definitions)
    package = definitions.package
    statement: dict[str, Any] = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date.today().isoformat(),
        "publisher": "calaim-fhir",
        "kind": "instance",
        "instantiates": [f"{_BULK}/CapabilityStatement/bulk-data"],
        "software": {"name": "calaim-fhir", "version": software},
        "implementation": {
            "description": "calaim-fhir: FHIR R4 server for Medi-Cal ECM and Community Supports",
            "url": settings.fhir_base,
        },
        "fhirVersion": "4.0.1",
        **(
            {
                "implementationGuide": [
                    f"{CANONICAL_BASE}/ImplementationGuide/{package['name']}"
                    f"|{package.get('version', '')}"
                ]
            }
            if package.get("name")
            else {}
        ),
        "format": ["json"],
        "patchFormat": [
            "application/json-patch+json",
            "application/fhir+json",
            "application/merge-patch+json",
        ],
        "rest": [
            {
                "mode": "server",
                "documentation": _documentation(settings),
                "security": _security(settings),
                "resource": [
                    _resource(t, settings, registry, revincludes[t], profiles)
                    for t in sorted(RESOURCE_TYPES)
                ],
                "interaction": [{"code": code} for code in system_interactions()],
                "searchParam": [
                    _search_param(registry, "Patient", code)
                    for code in _SYSTEM_PARAMS
                    if code in registry.for_type("Patient")
                ],
                "compartment": ["http://hl7.org/fhir/CompartmentDefinition/patient"],
            }
        ],
    }
    system_operations = _system_operations()
    if system_operations:
        statement["rest"][0]["operation"] = system_operations
    return orjson.dumps(statement)


def _tag(statement: bytes, summary: str | None, elements: tuple[str, ...] | None) -> str:
    """The entity tag of one shaping of the statement (``_pretty`` changes only whitespace:
    a weak tag)."""
    digest = _digest(statement)
    if summary is not None or elements:
        shaping = f"{summary}|{','.join(elements or ())}".encode()
        digest = hashlib.sha256(digest.encode() + shaping).hexdigest()[:24]
    return f'W/"{digest}"'


@cache
def _digest(statement: bytes) -> str:
    return hashlib.sha256(statement).hexdigest()[:24]


def _matches(if_none_match: str | None, tag: str) -> bool:
    """``If-None-Match`` names ``tag`` (weak comparison, RFC 9110 13.1.2) or is ``*``."""
    if if_none_match is None:
        return False
    opaque = tag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == opaque:
            return True
    return False


@router.get("/metadata", operation_id="capabilities", summary="The CapabilityStatement")
async def metadata(request: Request) -> Response:
    """The CapabilityStatement, with an entity tag (If-None-Match answers 304) and the read
    shaping parameters _summary and _elements. Clients may cache it and revalidate
    (Cache-Control: no-cache); it carries no patient data."""
    note(request, "capabilities", None, None)
    http.check_accept(request)
    query = request.query_params.multi_items()
    for name, value in query:
        if name == "mode" and value not in ("full", "normal"):
            raise InvalidSearch("Only mode=full and mode=normal are supported", expression="mode")
    summary, elements = read_shape([(k, v) for k, v in query if k != "mode"])
    statement = capability_statement(settings_of(request), services_of(request).search.registry)
    tag = _tag(statement, summary, elements)
    headers = {"ETag": tag, "Cache-Control": "no-cache"}
    if _matches(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers=headers)
    body = shape(statement, summary, elements)
    return Response(
        http.reformat(body, http.pretty(request)), media_type=http.FHIR_JSON, headers=headers
    )
