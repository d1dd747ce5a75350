"""``GET /``: a small page for a person who opens the server in a browser — the FHIR base
URL, the CapabilityStatement, the OpenAPI document and where the documentation is; and
``GET /openapi.json``: the OpenAPI document, the bytes committed as ``openapi/openapi.json``
(``server/openapi_document.py``), handed down by the composition root as
``app.state.openapi_document``."""

from __future__ import annotations

import asyncio
from html import escape

import orjson
from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response

from server.api.context import settings_of
from server.fhir.outcome import Issue, operation_outcome

router = APIRouter()

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>calaim-fhir</title></head>
<body>
<h1>calaim-fhir</h1>
<p>A FHIR R4 (4.0.1) server for Medi-Cal Enhanced Care Management and Community Supports.</p>
<ul>
<li>FHIR base URL: <a href="{base}"><code>{base}</code></a></li>
<li>CapabilityStatement: <a href="{base}/metadata"><code>{base}/metadata</code></a></li>
<li>OpenAPI document: <a href="{openapi}"><code>{openapi}</code></a></li>
<li>Documentation: <code>README.md</code> and <code>docs/</code> in the source tree
(<code>docs/clients.md</code> for FHIR clients, <code>docs/search.md</code>,
<code>docs/validation.md</code>)</li>
<li>Example data: <code>calaim-fhir load examples/bundles</code></li>
</ul>
</body></html>
"""


@router.get("/", include_in_schema=False)
async def home(request: Request) -> HTMLResponse:
    base = settings_of(request).fhir_base
    # the OpenAPI document is served at the root of the server the FHIR base lives under
    origin = base[: -len("/fhir")] if base.endswith("/fhir") else ""
    page = _PAGE.format(base=escape(base), openapi=escape(f"{origin}/openapi.json"))
    return HTMLResponse(page)


@router.get("/openapi.json", include_in_schema=False)
async def openapi_document(request: Request) -> Response:
    build = request.app.state.openapi_document  # built once, on first use
    document = await asyncio.to_thread(build)
    return Response(document, media_type="application/json")


@router.get("/health", include_in_schema=False)
async def health(request: Request) -> Response:
    """Whether the store is sound and reachable: 200, or 503 with what is wrong (damage met
    while serving, a damaged database file or marker, a store that cannot be read). Cheap: the
    full check is ``calaim-fhir check``."""
    problems = await asyncio.to_thread(request.app.state.store.health)
    if problems:
        issues = [Issue("fatal", "exception", problem) for problem in problems]
        return Response(
            orjson.dumps(operation_outcome(issues)), 503, media_type="application/fhir+json"
        )
    body = operation_outcome([Issue("information", "informational", "The store is sound")])
    return Response(orjson.dumps(body), media_type="application/fhir+json")
