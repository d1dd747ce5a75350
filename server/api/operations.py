"""HTTP routes of FHIR operations: ``$op``, ``[type]/$op`` and ``[type]/[id]/$op``, GET and POST.

Inputs come from the query (GET: primitive parameters only) or a ``Parameters`` body (POST),
parsed against the operation's OperationDefinition; an operation with a ``resource`` input
also takes the bare resource as the body. Operations that change state refuse GET (405). An
instance-level call on an unknown or deleted instance is 404/410 before the operation runs.

Most operations run as one read (or, when the call may change state, ``Operation.writes``,
inside one write unit: a call of such an operation that writes nothing, such as a preview,
runs as a read and takes no writers' lock). A
``long_running`` one runs on a worker thread instead, reading through a reader of that thread
and writing through ``Call.write`` (group commit); with ``Prefer: respond-async`` it becomes an
asynchronous job: ``202 Accepted``, ``Content-Location: [base]/_async/<job>`` (``async_jobs.py``).

A batch or transaction entry ``GET [type]/[id]/$op?...`` runs an operation GET may call on the
entry's reader, as a read; a ``POST`` entry (its ``resource`` the ``Parameters``) runs any
operation that answers within the request (``entry``): as a read when the call writes nothing,
else in a write unit -- a batch entry's own, a transaction's one unit. Long-running operations
are called on their own URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import Response

from server.api import http
from server.api.context import jobs_of, note, pipeline_of, repository, services_of, settings_of
from server.api.interactions import FhirRequest, FhirResponse, check_id, check_type, run_search
from server.auth.operation_rules import refusal
from server.auth.policy import Access
from server.auth.principal import Principal
from server.errors import BadRequest, Forbidden, Gone, MethodNotAllowed, NotFound
from server.fhir.conformance import conformance
from server.fhir.outcome import information
from server.jobs import JobContext, ThreadWrites
from server.operations.call import Answer, Call
from server.operations.parameters import parse_input
from server.operations.registry import Operation, Operations
from server.ports import Reader, Unit
from server.search.parse import SearchRequest
from server.services import Services
from server.settings import Settings
from server.store.authorized import system_reader
from server.store.base import Event
from server.writes.pipeline import Pipeline, through

router = APIRouter()


class _OperationConvertor(Convertor[str]):
    regex = "\\$[a-z][a-z\\-]{0,63}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("fhirop", _OperationConvertor())

_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Accepted (Prefer: respond-async, long-running operations): poll the "
        "Content-Location URL for the result"
    },
    "default": {
        "description": "An OperationOutcome describing the error",
        "content": {"application/fhir+json": {}},
    },
}


def _operation(
    operations: Operations, type: str, name: str, instance: bool, method: str
) -> Operation:
    """The operation ``name`` where its OperationDefinition runs it; 404 where it does not
    run, 405 for a GET of one that changes data."""
    name = name.removeprefix("$")
    if not type:
        level, where = "system", "the server"
    else:
        check_type(type)
        level, where = ("instance", f"{type}/[id]") if instance else ("type", type)
    operation = operations.find(level, type, name)
    if operation is None:
        if level == "system":
            raise NotFound(f"No system-level operation ${name}")
        raise NotFound(f"No operation ${name} on {where}")
    if method == "GET" and not operation.get_allowed:
        raise MethodNotAllowed(f"${name} changes data: use POST", headers={"Allow": "POST"})
    return operation


def _instance(reader: Reader, type: str, id: str) -> dict[str, Any]:
    """The instance an instance-level operation runs on, read through the door (a
    definition too: the door serves them); hidden reads as unknown."""
    version = reader.read(type, id)
    if version is None:
        raise NotFound(f"{type}/{id} is not known")
    if version.body is None:
        raise Gone(f"{type}/{id} was deleted (version {version.version})")
    body: dict[str, Any] = orjson.loads(version.body)
    return body


def _page(
    reader: Reader, settings: Settings, bound: int, parsed: SearchRequest, path: str
) -> bytes:
    """One page of ``parsed`` as a searchset Bundle of at most ``bound`` bytes (an operation
    that answers with one)."""
    return run_search(reader, parsed, settings, path, bound)


def _permitted(request: Request, operation: Operation, type: str) -> None:
    _check_needs(repository(request).access, operation, type)


def _check_needs(access: Access, operation: Operation, type: str) -> None:
    """The operation's own entry of the operations table (403 when the caller lacks it)."""
    if operation.needs is None:
        return
    refused = refusal(access, operation.needs, type)
    if refused is not None:
        raise Forbidden(refused)


def _inputs(operation: Operation, request: Request, body: Any) -> dict[str, list[Any]]:
    query = [
        (k, v) for k, v in request.query_params.multi_items() if k not in ("_format", "_pretty")
    ]
    return _parsed_inputs(operation, query, body)


def _parsed_inputs(
    operation: Operation, query: list[tuple[str, str]], body: Any
) -> dict[str, list[Any]]:
    if body is None:
        return parse_input(operation.spec, query=query, body=None)
    if (
        operation.takes_resource
        and isinstance(body, dict)
        and body.get("resourceType") != "Parameters"
    ):
        body = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": body}]}
    return parse_input(operation.spec, query=query or None, body=body)


@dataclass(frozen=True, slots=True)
class Invocation:
    """One call of an operation, its inputs parsed and the caller's permission checked: on its
    own URL (``_run``) or as an entry of a batch or transaction (``entry``). ``writes``: the
    call runs in a write unit (``in_unit``), else as a read (``read``)."""

    operation: Operation
    settings: Settings
    services: Services
    type: str
    id: str | None
    params: dict[str, list[Any]]
    restricted: bool

    @property
    def writes(self) -> bool:
        return self.operation.writes(self.params)

    def read(
        self,
        system: Reader,
        reader: Reader,
        bound: int,
        events: Callable[[str, str], list[Event]] | None = None,
    ) -> FhirResponse:
        """The call on the caller's ``reader`` (``system``: unnarrowed), writing nothing; a
        page it answers holds at most ``bound`` bytes."""
        instance = _instance(reader, self.type, self.id) if self.id is not None else None
        call = Call(
            self.settings,
            self.type,
            self.id,
            self.params,
            reader,
            conformance(),
            instance,
            events=events,
            system=system,
            restricted=self.restricted,
            page=partial(_page, reader, self.settings, bound),
            services=self.services,
        )
        return FhirResponse(200, payload=_payload(self.operation.run(call)))

    def in_unit(self, unit: Unit, pipeline: Pipeline, principal: Principal) -> FhirResponse:
        """The call in ``unit``, its writes through the pipeline as ``principal``."""
        instance = _instance(unit, self.type, self.id) if self.id is not None else None
        writer = pipeline.in_unit(unit, principal)
        call = Call(
            self.settings,
            self.type,
            self.id,
            self.params,
            unit,
            conformance(),
            instance,
            write=writer.write,
            services=self.services,
        )
        return FhirResponse(200, payload=_payload(self.operation.run(call)))


def entry(
    access: Access, settings: Settings, services: Services, request: FhirRequest
) -> Invocation:
    """The operation entry ``request`` of a batch or transaction (GET for an operation GET
    may call; POST, ``resource`` its ``Parameters`` or the bare resource of an operation that
    takes one, for any that answers within the request), ready to run (404 for an
    operation that does not run there, 405 for a GET of one that changes data, 400 for a
    long-running one or bad inputs, 403 where the operations table refuses the caller)."""
    assert request.operation is not None
    type, id = request.type or "", request.id
    operation = _operation(
        services.operations, type, request.operation, id is not None, request.method
    )
    if id is not None:
        check_id(id)
    if operation.long_running:
        raise BadRequest(
            f"${operation.name} runs on a worker thread: call it on its own URL", expression="url"
        )
    query = [(k, v) for k, v in request.query if k not in ("_format", "_pretty")]
    body = request.body if request.method == "POST" else None
    params = _parsed_inputs(operation, query, body)
    _check_needs(access, operation, type)
    return Invocation(operation, settings, services, type, id, params, not access.unrestricted)


def _payload(answer: Answer) -> bytes:
    return answer if isinstance(answer, bytes) else orjson.dumps(answer)


def _resource(answer: Answer) -> dict[str, Any]:
    """The answer of a long-running operation (kept by a job as JSON)."""
    if isinstance(answer, bytes):
        parsed: dict[str, Any] = orjson.loads(answer)
        return parsed
    return answer


async def _run(request: Request, type: str, id: str | None, name: str) -> Response:
    note(request, "operation", type or None, id)
    http.check_accept(request)
    settings = settings_of(request)
    method = request.method
    operation = _operation(services_of(request).operations, type, name, id is not None, method)
    if id is not None:
        check_id(id)
    body = await http.read_json(request, settings, http.JSON_TYPES) if method == "POST" else None
    params = _inputs(operation, request, body)
    _permitted(request, operation, type)
    if operation.long_running:
        return await _run_long(request, operation, type, id, params)
    repo = repository(request)
    pipeline, principal = pipeline_of(request), repo.principal
    events = request.app.state.store.outbox.of
    call = Invocation(
        operation, settings, services_of(request), type, id, params, not repo.access.unrestricted
    )
    if call.writes:
        result = await repo.writing(partial(call.in_unit, pipeline=pipeline, principal=principal))
    else:
        bound = settings.max_response_bytes
        result = await repo.checking(partial(call.read, bound=bound, events=events))
    return http.render(result, settings, indent=http.pretty(request))


async def _run_long(
    request: Request,
    operation: Operation,
    type: str,
    id: str | None,
    params: dict[str, list[Any]],
) -> Response:
    """A long-running operation on a worker thread: now (200), or as a job (202)."""
    settings = settings_of(request)
    definitions = conformance()
    repo = repository(request)
    pipeline, principal = pipeline_of(request), repo.principal
    instance = None
    if id is not None:  # 404/410 now, not in the job
        instance = await repo.reading(lambda reader: _instance(reader, type, id))
    # a restricted caller's run is judged on the whole record (the system reader; what reaches
    # the caller goes through the operation's output policy) and what it keeps of the run is
    # written by the server on the caller's behalf (docs/access.md)
    restricted = not repo.access.unrestricted
    call = partial(
        Call,
        settings,
        type,
        id,
        params,
        conformance=definitions,
        instance=instance,
        restricted=restricted,
        services=services_of(request),
    )
    base = settings.fhir_base
    if http.prefer_async(request):

        def job(context: JobContext) -> tuple[int, dict[str, Any]]:
            def run(reader: Reader) -> dict[str, Any]:
                return _resource(
                    operation.run(
                        call(
                            reader=reader,
                            system=system_reader(reader),
                            write=through(pipeline, principal, context.write, system=restricted),
                            progress=context.progress,
                            cancelled=context.cancelled,
                            prefer_async=True,
                        )
                    )
                )

            return 200, context.read(run)

        url = base + request.url.path.removeprefix("/fhir")
        if request.url.query:
            url += "?" + request.url.query
        job_id = await asyncio.to_thread(
            jobs_of(request).submit,
            operation.name,
            {"method": request.method, "url": url},
            job,
            access=repo,
            unit=operation.progress_unit,
        )
        status_url = f"{base}/_async/{job_id}"
        outcome = information(f"Accepted: poll {status_url} for the result")
        return Response(
            http.dump(outcome, http.pretty(request)),
            status_code=202,
            headers={"Content-Location": status_url},
            media_type=http.FHIR_JSON,
        )
    loop = asyncio.get_running_loop()
    writes = through(pipeline, principal, ThreadWrites(repo, loop), system=restricted)

    def now() -> bytes:
        with repo.reader() as reader:
            answer = operation.run(call(reader=reader, system=system_reader(reader), write=writes))
            return _payload(answer)

    payload = await asyncio.to_thread(now)
    return http.render(FhirResponse(200, payload=payload), settings, indent=http.pretty(request))


_SYSTEM_PATH = "/{operation:fhirop}"
_TYPE_PATH = "/{type:fhirtype}/{operation:fhirop}"
_INSTANCE_PATH = "/{type:fhirtype}/{id:fhirid}/{operation:fhirop}"


async def _system_level(request: Request) -> Response:
    return await _run(request, "", None, request.path_params["operation"])


async def _type_level(request: Request) -> Response:
    path = request.path_params
    return await _run(request, path["type"], None, path["operation"])


async def _instance_level(request: Request) -> Response:
    path = request.path_params
    return await _run(request, path["type"], path["id"], path["operation"])


for _method in ("GET", "POST"):
    router.add_api_route(
        _SYSTEM_PATH,
        _system_level,
        methods=[_method],
        operation_id=f"operationSystem{_method.title()}",
        responses=_RESPONSES,
        include_in_schema=False,  # described per operation (openapi_export)
    )
    router.add_api_route(
        _TYPE_PATH,
        _type_level,
        methods=[_method],
        operation_id=f"operationType{_method.title()}",
        responses=_RESPONSES,
        include_in_schema=False,  # described per operation (openapi_export)
    )
    router.add_api_route(
        _INSTANCE_PATH,
        _instance_level,
        methods=[_method],
        operation_id=f"operationInstance{_method.title()}",
        responses=_RESPONSES,
        include_in_schema=False,  # described per operation (openapi_export)
    )
