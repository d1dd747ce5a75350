"""The generic FHIR REST routes: thin adapters from HTTP to ``interactions``."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.responses import Response

from server.api import bundles, http, paths
from server.api.context import note, pipeline_of, repository, services_of, settings_of
from server.api.interactions import FhirRequest, run_read, to_response, to_write
from server.api.writing import submit
from server.errors import BadRequest

router = APIRouter()

_RESPONSES: dict[int | str, dict[str, Any]] = {
    "default": {
        "description": "An OperationOutcome describing the error",
        "content": {"application/fhir+json": {}},
    }
}
_FHIR: dict[str, Any] = {"content": {"application/fhir+json": {}}}


async def _read(request: Request, freq: FhirRequest) -> Response:
    http.check_accept(request)
    settings = settings_of(request)
    repo = repository(request)
    context = services_of(request).search.context
    result = await repo.reading(lambda reader: run_read(reader, freq, settings, context))
    return http.render(result, settings, indent=http.pretty(request))


async def _write(request: Request, freq: FhirRequest) -> Response:
    http.check_accept(request)
    settings = settings_of(request)
    prefer = http.prefer_return(request)
    written = await submit(repository(request), pipeline_of(request), to_write(freq))
    return http.render(to_response(written), settings, indent=http.pretty(request), prefer=prefer)


# Routes are listed most frequent first (see paths.py: their patterns never overlap).


@router.get(
    "/{type:fhirtype}/{id:fhirid}",
    operation_id="read",
    responses=_RESPONSES,
    summary="Read a resource",
)
async def read(request: Request) -> Response:
    return await _read(request, http.fhir_request(request, "GET", "read"))


@router.post(
    "/{type:fhirtype}",
    operation_id="create",
    responses={201: _FHIR, **_RESPONSES},
    summary="Create a resource (If-None-Exist or search parameters: conditional create)",
)
async def create(request: Request) -> Response:
    freq = http.fhir_request(request, "POST", "create")
    freq.body = await http.read_json(request, settings_of(request), http.JSON_TYPES)
    return await _write(request, freq)


@router.put(
    "/{type:fhirtype}/{id:fhirid}",
    operation_id="update",
    responses={201: _FHIR, **_RESPONSES},
    summary="Update a resource (creates it when the id is new)",
)
async def update(request: Request) -> Response:
    freq = http.fhir_request(request, "PUT", "update")
    freq.query = []
    freq.body = await http.read_json(request, settings_of(request), http.JSON_TYPES)
    return await _write(request, freq)


@router.get(
    "/{type:fhirtype}",
    operation_id="searchType",
    responses=_RESPONSES,
    summary="Search resources of a type",
)
async def search_type(request: Request) -> Response:
    freq = http.fhir_request(request, "GET", "search-type")
    freq.lenient = http.prefer_lenient(request)
    return await _read(request, freq)


@router.patch(
    "/{type:fhirtype}/{id:fhirid}",
    operation_id="patch",
    responses=_RESPONSES,
    summary="Patch a resource (JSON Patch, FHIRPath Patch or JSON Merge Patch)",
)
async def patch(request: Request) -> Response:
    freq = http.fhir_request(request, "PATCH", "patch")
    freq.query = []
    await http.read_patch(request, settings_of(request), freq)
    return await _write(request, freq)


@router.delete(
    "/{type:fhirtype}/{id:fhirid}",
    operation_id="delete",
    responses=_RESPONSES,
    summary="Delete a resource (a new, deleted version)",
)
async def delete(request: Request) -> Response:
    freq = http.fhir_request(request, "DELETE", "delete")
    freq.query = []
    return await _write(request, freq)


@router.get(
    "/{type:fhirtype}/{id:fhirid}/_history/{vid}",
    operation_id="vread",
    responses=_RESPONSES,
    summary="Read one version of a resource",
)
async def vread(request: Request) -> Response:
    freq = http.fhir_request(request, "GET", "vread")
    return await _read(request, freq)


@router.get(
    "/{type:fhirtype}/{id:fhirid}/_history",
    operation_id="historyInstance",
    responses=_RESPONSES,
    summary="Every version of a resource",
)
async def history_instance(request: Request) -> Response:
    freq = http.fhir_request(request, "GET", "history-instance", history=True)
    return await _read(request, freq)


@router.get(
    "/{type:fhirtype}/_history",
    operation_id="historyType",
    responses=_RESPONSES,
    summary="History of every resource of a type",
)
async def history_type(request: Request) -> Response:
    freq = http.fhir_request(request, "GET", "history-type", history=True)
    return await _read(request, freq)


@router.post(
    "/{type:fhirtype}/_search",
    operation_id="searchTypePost",
    responses=_RESPONSES,
    summary="Search resources of a type (form-encoded parameters)",
)
async def search_type_post(request: Request) -> Response:
    return await _search_post(request, "search-type")


async def _search_post(request: Request, interaction: str) -> Response:
    """``POST [type]/_search`` and ``POST /_search``: parameters from the URL and the form."""
    freq = http.fhir_request(request, "GET", interaction)
    freq.lenient = http.prefer_lenient(request)
    raw = await http.read_body(request, settings_of(request), frozenset({http.FORM_TYPE}))
    try:
        form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("The form body is not valid application/x-www-form-urlencoded") from exc
    freq.query = [*freq.query, *form]
    return await _read(request, freq)


@router.get(
    "/{ctype:fhirtype}/{cid:fhirid}/{type:fhirtype}",
    operation_id="searchCompartment",
    responses=_RESPONSES,
    summary="Search the resources of a type in a Patient's compartment",
)
async def search_compartment(request: Request) -> Response:
    freq = http.fhir_request(request, "GET", "search-compartment")
    freq.compartment = (request.path_params["ctype"], request.path_params["cid"])
    freq.lenient = http.prefer_lenient(request)
    return await _read(request, freq)


@router.put(
    "/{type:fhirtype}",
    operation_id="conditionalUpdate",
    responses=_RESPONSES,
    summary="Update the resource matching the search criteria",
)
async def conditional_update(request: Request) -> Response:
    freq = http.fhir_request(request, "PUT", "update")
    freq.body = await http.read_json(request, settings_of(request), http.JSON_TYPES)
    return await _write(request, freq)


@router.patch(
    "/{type:fhirtype}",
    operation_id="conditionalPatch",
    responses=_RESPONSES,
    summary="Patch the resource matching the search criteria",
)
async def conditional_patch(request: Request) -> Response:
    freq = http.fhir_request(request, "PATCH", "patch")
    await http.read_patch(request, settings_of(request), freq)
    return await _write(request, freq)


@router.delete(
    "/{type:fhirtype}",
    operation_id="conditionalDelete",
    responses=_RESPONSES,
    summary="Delete the resource(s) matching the search criteria",
)
async def conditional_delete(request: Request) -> Response:
    return await _write(request, http.fhir_request(request, "DELETE", "delete"))


# -- instance level --------------------------------------------------------------------------


@router.post("/", include_in_schema=False)  # the base URL with a trailing slash
@router.post(
    "",
    operation_id="transactionOrBatch",
    responses=_RESPONSES,
    summary="Process a batch or transaction Bundle",
)
async def bundle(request: Request) -> Response:
    note(request, "batch/transaction", "Bundle", None)
    http.check_accept(request)
    settings = settings_of(request)
    body = await http.read_json(request, settings, http.JSON_TYPES)
    payload = await bundles.process(
        body,
        repository(request),
        pipeline_of(request),
        settings,
        services_of(request),
        http.prefer_return(request),
        events=request.app.state.store.outbox.of,
    )
    return Response(http.reformat(payload, http.pretty(request)), media_type=http.FHIR_JSON)


@router.get("/", include_in_schema=False)  # the base URL with a trailing slash
@router.get(
    "",
    operation_id="searchSystem",
    responses=_RESPONSES,
    summary="Search across resource types (_type, common parameters)",
)
async def search_system(request: Request) -> Response:
    freq = http.fhir_request(request, "GET", "search-system")
    freq.lenient = http.prefer_lenient(request)
    return await _read(request, freq)


@router.post(
    "/_search",
    operation_id="searchSystemPost",
    responses=_RESPONSES,
    summary="Search across resource types (form-encoded parameters)",
)
async def search_system_post(request: Request) -> Response:
    return await _search_post(request, "search-system")


@router.get(
    "/_history",
    operation_id="historySystem",
    responses=_RESPONSES,
    summary="History of every resource",
)
async def history_system(request: Request) -> Response:
    return await _read(request, http.fhir_request(request, "GET", "history-system", history=True))


# -- type level ------------------------------------------------------------------------------


# included after every other router: it answers only URLs nothing else serves
fallback = APIRouter()


@fallback.api_route(
    "/{rest:path}",
    methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    include_in_schema=False,
)
async def unmatched(request: Request) -> Response:
    note(request, "unmatched", None, None)
    raise paths.unmatched(request.method, request.path_params["rest"])
