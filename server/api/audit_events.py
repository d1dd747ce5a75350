"""``AuditEvent``: a read-only search view over the audit trail (``store/sql/audit.py``).

Read by id and search (``date``, ``agent``, ``entity``, ``patient``, ``type``, ``subtype``,
``outcome``, ``purpose``, ``_count``; newest first, paged by ``_cursor``) for an auditor only:
``purpose`` (a purpose of use asserted, v3-ActReason; each parameter must hold, a list is OR)
is a search parameter of this server: ``purpose=ETREAT`` is the break-the-glass report. A client
registered with ``--role auditor`` whose token carries ``system/AuditEvent.rs`` (or the local
operator of a server without authentication). Everyone else gets 403. Writes are refused
(405). The audit layer never records these requests.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from server.api import http
from server.api.context import principal_of, settings_of
from server.audit.balp import ACT_REASON, EVENT_TYPE, INTERACTION, audit_event
from server.audit.trail import AuditTrail
from server.auth.interactions import Interaction
from server.errors import Forbidden, InvalidSearch, MethodNotAllowed, NotFound
from server.fhir.instant import date_range
from server.fhir.references import parse_reference
from server.store.sql.audit import AuditQuery

router = APIRouter()
MAX_COUNT = 1000
_PREFIXES = ("eq", "ge", "gt", "le", "lt")
_PARAMS = frozenset(
    {"date", "agent", "entity", "patient", "type", "subtype", "outcome", "purpose", "_count",
     "_cursor", "_format", "_pretty"}
)


def _trail(request: Request, interaction: Interaction) -> AuditTrail:
    principal = principal_of(request)
    if not principal.allow_all and not (
        principal.role == "auditor"
        and principal.scopes is not None
        and principal.scopes.permits(interaction, "AuditEvent")
    ):
        raise Forbidden(
            "AuditEvent is readable only by an auditor client with system/AuditEvent.rs"
        )
    trail: AuditTrail = request.app.state.audit
    return trail


@router.get("/AuditEvent/{id:fhirid}", operation_id="readAuditEvent", summary="Read an AuditEvent")
async def read(request: Request) -> Response:
    trail = _trail(request, Interaction.READ)
    http.check_accept(request)
    found = await asyncio.to_thread(trail.store.read, request.path_params["id"])
    if found is None:
        raise NotFound(f"AuditEvent/{request.path_params['id']} is not known")
    body = audit_event(found, settings_of(request).fhir_base)
    return Response(http.dump(body, http.pretty(request)), media_type=http.FHIR_JSON)


@router.get("/AuditEvent", operation_id="searchAuditEvent", summary="Search the audit trail")
async def search(request: Request) -> Response:
    trail = _trail(request, Interaction.SEARCH_TYPE)
    http.check_accept(request)
    zone = ZoneInfo(settings_of(request).search_timezone)
    query, empty = _query(list(request.query_params.multi_items()), zone)
    base = settings_of(request).fhir_base
    rows = [] if empty else await asyncio.to_thread(trail.store.search, query)
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "_cursor"]
    links = [{"relation": "self", "url": f"{base}/AuditEvent?{urlencode(kept)}"}]
    if len(rows) == query.count:
        nxt = urlencode([*kept, ("_cursor", str(rows[-1][0]))])
        links.append({"relation": "next", "url": f"{base}/AuditEvent?{nxt}"})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [
            {
                "fullUrl": f"{base}/AuditEvent/{r.id}",
                "resource": audit_event(r, base),
                "search": {"mode": "match"},
            }
            for _, r in rows
        ],
    }
    return Response(http.dump(bundle, http.pretty(request)), media_type=http.FHIR_JSON)


async def refuse(request: Request) -> Response:
    raise MethodNotAllowed("AuditEvent is read-only: the server writes the audit trail")


for _path in ("/AuditEvent", "/AuditEvent/{id:fhirid}", "/AuditEvent/{id:fhirid}/_history",
              "/AuditEvent/_history"):
    router.add_api_route(
        _path,
        refuse,
        methods=["POST", "PUT", "PATCH", "DELETE"] if "_history" not in _path else ["GET"],
        include_in_schema=False,
    )


def _refs(value: str, kind: str) -> tuple[str, ...]:
    refs = []
    for item in value.split(","):
        item = item.strip()
        found = parse_reference(item)
        if found is not None and found.type is not None and found.id is not None:
            item = f"{found.type}/{found.id}"  # an absolute or versioned reference: Type/id
        if kind == "patient" and "/" not in item:
            item = f"Patient/{item}"
        refs.append(item)
    return tuple(refs)


def _codes(value: str, system: str, name: str) -> tuple[str, ...]:
    codes = []
    for item in value.split(","):
        given, _, code = item.rpartition("|")
        if given and given != system:
            continue  # another system: matches nothing
        codes.append(code)
    return tuple(codes)


def _query(params: list[tuple[str, str]], zone: ZoneInfo) -> tuple[AuditQuery, bool]:
    """The store's query of a search, and whether it matches nothing whatever is stored."""
    refs: list[tuple[str, tuple[str, ...]]] = []
    since: int | None = None
    until: int | None = None
    interactions: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ()
    purposes: list[tuple[str, ...]] = []
    before: int | None = None
    count = 50
    empty = False
    for name, value in params:
        if name not in _PARAMS:
            raise InvalidSearch(f"Unknown AuditEvent search parameter: {name}", expression=name)
        if name in ("agent", "entity", "patient"):
            refs.append((name, _refs(value, name)))
        elif name == "date":
            prefix = value[:2] if value[:2] in _PREFIXES else "eq"
            text = value[2:] if value[:2] in _PREFIXES else value
            span = date_range(text, zone)
            if span is None:
                raise InvalidSearch(f"Invalid date: {value}", expression="date")
            low, high = span
            lo, hi = {
                "eq": (low, high), "ge": (low, None), "gt": (high, None),
                "le": (None, high), "lt": (None, low),
            }[prefix]
            since = lo if since is None or (lo is not None and lo > since) else since
            until = hi if until is None or (hi is not None and hi < until) else until
        elif name == "type":
            empty = empty or "rest" not in _codes(value, EVENT_TYPE, name)
        elif name == "subtype":
            codes = _codes(value, INTERACTION, name)
            interactions = tuple(c for c in codes if not interactions or c in interactions)
            empty = empty or not interactions
        elif name == "outcome":
            codes = tuple(value.split(","))
            if any(c not in ("0", "4", "8", "12") for c in codes):
                raise InvalidSearch(f"Invalid outcome: {value}", expression="outcome")
            outcomes = tuple(c for c in codes if c != "12")
            empty = empty or not outcomes
        elif name == "purpose":
            codes = _codes(value, ACT_REASON, name)
            purposes.append(codes)
            empty = empty or not codes
        elif name == "_count":
            if not value.isdigit():
                raise InvalidSearch(f"Invalid _count: {value}", expression="_count")
            count = min(int(value), MAX_COUNT)
        elif name == "_cursor":
            if not value.isdigit():
                raise InvalidSearch(f"Invalid _cursor: {value}", expression="_cursor")
            before = int(value)
    if count == 0:
        empty = True
    query = AuditQuery(
        tuple(refs), since, until, interactions, outcomes, before, max(count, 1), tuple(purposes)
    )
    return query, empty
