"""The OpenAPI description of the FHIR API, served at ``/openapi.json`` and committed, the same
bytes, in ``openapi/openapi.json``.

FastAPI's own document knows the routes, their operationIds and summaries, but not what they
exchange: the routes read raw bodies (so that media types, size limits and errors are the
FHIR server's, not FastAPI's). ``export`` post-processes it: FHIR media types on request
bodies and responses, request bodies per operationId, path, header and query parameters
described, tags by level (system / type / instance); and one path per FHIR operation where
the registry runs it (``[base]/$op``, ``[type]/$op``, ``[type]/[id]/$op``), its inputs from
its OperationDefinition (query parameters for GET, a Parameters body for POST) in place of
the generic ``{operation}`` routes. The output is deterministic (sorted
keys, two-space indent, trailing newline); ``scripts/export-openapi`` rewrites the committed
file and ``tests/conformance/test_openapi.py`` fails when it drifts.

    python -m server.openapi_export [PATH]   # default: openapi/openapi.json
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

FHIR_JSON = "application/fhir+json"
JSON_PATCH = "application/json-patch+json"
FORM = "application/x-www-form-urlencoded"
DEFAULT_PATH = Path("openapi") / "openapi.json"

_REF = "#/components/schemas/"

# request bodies, by operationId: (media type, schema, description)
_BODIES: dict[str, tuple[str, str, str]] = {
    "transactionOrBatch": (FHIR_JSON, "Bundle", "A Bundle of type batch or transaction"),
    "create": (FHIR_JSON, "Resource", "The resource to create (any id is ignored)"),
    "update": (FHIR_JSON, "Resource", "The new content; its id must equal the URL's id"),
    "conditionalUpdate": (FHIR_JSON, "Resource", "The new content of the matching resource"),
    "patch": (JSON_PATCH, "JsonPatch", "A JSON Patch (RFC 6902) document"),
    "conditionalPatch": (JSON_PATCH, "JsonPatch", "A JSON Patch (RFC 6902) document"),
    "searchTypePost": (FORM, "SearchForm", "Search parameters, form-encoded"),
    "searchSystemPost": (FORM, "SearchForm", "Search parameters, form-encoded"),
}

# what a successful answer carries, by operationId
_ANSWERS: dict[str, str] = {
    "capabilities": "CapabilityStatement",
    "transactionOrBatch": "Bundle",
    "historySystem": "Bundle",
    "historyType": "Bundle",
    "historyInstance": "Bundle",
    "searchType": "Bundle",
    "searchTypePost": "Bundle",
    "searchSystem": "Bundle",
    "searchSystemPost": "Bundle",
    "searchCompartment": "Bundle",
    "delete": "OperationOutcome",
    "conditionalDelete": "OperationOutcome",
    "asyncStatus": "Bundle",
    "asyncCancel": "OperationOutcome",
}

_WRITES = frozenset(
    {
        "transactionOrBatch",
        "create",
        "update",
        "conditionalUpdate",
        "patch",
        "conditionalPatch",
        "delete",
        "conditionalDelete",
    }
)
_IF_MATCH = frozenset({"update", "conditionalUpdate", "patch", "conditionalPatch", "delete"})
_CONDITIONAL_READ = frozenset({"read", "vread"})
_CRITERIA = frozenset(
    {
        "searchType",
        "searchSystem",
        "searchCompartment",
        "conditionalUpdate",
        "conditionalPatch",
        "conditionalDelete",
    }
)
_SEARCHES = frozenset({"searchType", "searchSystem", "searchCompartment"})
_FORM_SEARCHES = frozenset({"searchTypePost", "searchSystemPost"})

_PATH_PARAMS: dict[str, dict[str, Any]] = {
    "type": {
        "description": "A resource type this server supports (e.g. Patient, Coverage)",
        "schema": {"$ref": _REF + "ResourceType"},
    },
    "id": {
        "description": "The logical id of the resource",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9\\-.]{1,64}$"},
    },
    "ctype": {
        "description": "The compartment type (Patient)",
        "schema": {"type": "string", "enum": ["Patient"]},
    },
    "cid": {
        "description": "The logical id of the compartment's Patient",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9\\-.]{1,64}$"},
    },
    "job": {
        "description": "The id of an asynchronous request (from the Content-Location of its "
        "202 answer)",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9\\-.]{1,64}$"},
    },
    "file": {
        "description": "An NDJSON file of a finished $export (a url of its manifest)",
        "schema": {"type": "string", "pattern": "^[A-Za-z]{1,64}-[0-9]{1,6}\\.ndjson$"},
    },
    "vid": {
        "description": "The version id (meta.versionId) of the resource",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
}


def _header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_FORMAT = _query(
    "_format",
    "Overrides Accept: json, application/fhir+json or application/json",
    {"type": "string"},
)
_PRETTY = _query("_pretty", "true: indent the JSON answer", {"type": "boolean"})
_COUNT = _query(
    "_count",
    "Page size; values above the configured maximum are clamped",
    {"type": "integer", "minimum": 0},
)
_HISTORY = frozenset({"historySystem", "historyType", "historyInstance"})
_SINCE = _query("_since", "Only versions last updated at or after this instant", {"type": "string"})
_AT = _query(
    "_at", "Only versions that were current at some time in this date's range", {"type": "string"}
)
_SEARCH = {
    "name": "criteria",
    "in": "query",
    "required": False,
    "style": "form",
    "explode": True,
    "description": "Search parameters (R4 search.html): every R4 SearchParameter of the type "
    "and the custom ones listed in the CapabilityStatement, with their modifiers and prefixes, "
    "chains and _has; result parameters _sort, _total, _summary, _elements, _include, "
    "_revinclude. Unknown parameters are refused with 400 unless Prefer: handling=lenient",
    "schema": {"type": "object", "additionalProperties": {"type": "string"}},
}
_LENIENT = _header("Prefer", "handling=lenient: ignore unknown search parameters")
_PREFER = _header("Prefer", "return=minimal | return=representation | return=OperationOutcome")
_PREFER_ASYNC = _header(
    "Prefer",
    "respond-async: run a long-running operation as an asynchronous request (202 Accepted, "
    "then poll the Content-Location URL)",
)
_IF_MATCH_H = _header("If-Match", 'Version-aware update: the ETag of the current version, W/"3"')
_IF_NONE_EXIST = _header(
    "If-None-Exist", "Conditional create: search parameters, e.g. identifier=system|value"
)
_IF_NONE_MATCH = _header("If-None-Match", "Conditional read: 304 when the ETag matches")
_IF_MODIFIED = _header(
    "If-Modified-Since", "Conditional read: 304 when not modified since this HTTP date"
)


def _schemas() -> dict[str, Any]:
    from server.fhir.resource_types import RESOURCE_TYPES

    def resource(description: str, type: str | None = None) -> dict[str, Any]:
        kind: dict[str, Any] = {"type": "string"}
        if type is not None:
            kind = {"const": type}
        return {
            "type": "object",
            "description": description,
            "required": ["resourceType"],
            "properties": {"resourceType": kind, "id": {"type": "string"}},
            "additionalProperties": True,
        }

    return {
        "ResourceType": {
            "type": "string",
            "enum": sorted(RESOURCE_TYPES),
            "description": "The FHIR R4 resource types this server supports",
        },
        "Resource": resource("A FHIR R4 resource (JSON representation)"),
        "Bundle": resource("A FHIR R4 Bundle", "Bundle"),
        "OperationOutcome": resource("A FHIR R4 OperationOutcome", "OperationOutcome"),
        "CapabilityStatement": resource("The server's CapabilityStatement", "CapabilityStatement"),
        "JsonPatch": {
            "type": "array",
            "description": "A JSON Patch document (RFC 6902)",
            "items": {
                "type": "object",
                "required": ["op", "path"],
                "properties": {
                    "op": {"enum": ["add", "remove", "replace", "move", "copy", "test"]},
                    "path": {"type": "string"},
                    "from": {"type": "string"},
                    "value": {},
                },
            },
        },
        "SearchForm": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Search parameters as form fields",
        },
    }


def _content(media: str, schema: str) -> dict[str, Any]:
    return {media: {"schema": {"$ref": _REF + schema}}}


def _tag(path: str) -> str:
    rest = path.removeprefix("/fhir").strip("/")
    if not rest or rest.startswith(("_", "metadata", "$")):
        return "system"
    return "instance" if "{id}" in rest else "type"


def _operation(path: str, op: dict[str, Any]) -> None:
    op_id = str(op.get("operationId", ""))
    op["tags"] = [_tag(path)]
    # handlers read their path parameters from the request, so they come from the template
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, **copy.deepcopy(_PATH_PARAMS[name])}
        for name in re.findall(r"{(\w+)}", path)
    ]
    params += [p for p in op.get("parameters", []) if p.get("in") != "path"]
    if op_id in _CRITERIA:
        if op_id in _SEARCHES:
            params += [_COUNT, _LENIENT]
        params.append(_SEARCH)
    if op_id in _FORM_SEARCHES:
        params += [_COUNT, _LENIENT]
    if op_id == "create":
        params.append(_IF_NONE_EXIST)
    if op_id in _IF_MATCH:
        params.append(_IF_MATCH_H)
    if op_id in _CONDITIONAL_READ:
        params += [_IF_NONE_MATCH, _IF_MODIFIED]
    if op_id in _HISTORY:
        params += [_COUNT, _SINCE, _AT]
    if op_id in _WRITES:
        params.append(_PREFER)
    params += [_FORMAT, _PRETTY]
    op["parameters"] = copy.deepcopy(params)

    body = _BODIES.get(op_id)
    if body is not None:
        media, schema, description = body
        op["requestBody"] = {
            "required": True,
            "description": description,
            "content": _content(media, schema),
        }

    answer = _ANSWERS.get(op_id, "Resource")
    responses: dict[str, Any] = op.setdefault("responses", {})
    responses.pop("422", None)
    responses.setdefault("default", {"description": "An OperationOutcome describing the error"})
    for code, response in responses.items():
        if code == "default":
            response["content"] = _content(FHIR_JSON, "OperationOutcome")
        elif code == "202":
            response["content"] = _content(FHIR_JSON, "OperationOutcome")
        elif code == "201":
            response["description"] = "Created: the new resource (per Prefer)"
            response["content"] = _content(FHIR_JSON, answer)
        elif code.startswith("2"):
            if response.get("description") == "Successful Response":
                response["description"] = "Success"
            response["content"] = _content(FHIR_JSON, answer)
    if op_id in _CONDITIONAL_READ:
        responses["304"] = {"description": "Not modified (conditional read)"}


# -- FHIR operations, one path each, from the registry and the OperationDefinitions ---------

_QUERY_TYPES: dict[str, dict[str, Any]] = {
    "boolean": {"type": "boolean"},
    "integer": {"type": "integer"},
    "positiveInt": {"type": "integer", "minimum": 1},
    "unsignedInt": {"type": "integer", "minimum": 0},
    "decimal": {"type": "number"},
}


def _camel(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_]", text) if part)


def _query_inputs(inputs: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The operation's primitive inputs as query parameters (a GET carries only those)."""
    out = []
    for p in inputs:
        schema = copy.deepcopy(_QUERY_TYPES.get(p["type"], {"type": "string"}))
        if p.get("max", "*") != "1":
            schema = {"type": "array", "items": schema}
        out.append(
            {
                "name": p["name"],
                "in": "query",
                "required": int(p.get("min", 0)) > 0,
                "description": f"{p.get('documentation', p['name'])} ({p['type']}, "
                f"{p.get('min', 0)}..{p.get('max', '*')})",
                "schema": schema,
                "style": "form",
                "explode": True,
            }
        )
    return out


def _parameters_body(inputs: Sequence[Mapping[str, Any]], takes_resource: bool) -> dict[str, Any]:
    names = sorted({p["name"] for p in inputs})
    described = ", ".join(
        f"{p['name']} ({p.get('type', 'parts')}, {p.get('min', 0)}..{p.get('max', '*')})"
        for p in inputs
    )
    parameters: dict[str, Any] = {
        "type": "object",
        "required": ["resourceType"],
        "properties": {
            "resourceType": {"const": "Parameters"},
            "parameter": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"enum": names}} if names else {},
                    "additionalProperties": True,
                },
            },
        },
        "additionalProperties": True,
    }
    schema = {"oneOf": [parameters, {"$ref": _REF + "Resource"}]} if takes_resource else parameters
    text = "A Parameters resource" + (f": {described}" if described else " (no inputs)")
    if takes_resource:
        text += "; or the resource itself"
    return {"required": True, "description": text, "content": {FHIR_JSON: {"schema": schema}}}


def _operation_paths() -> dict[str, dict[str, Any]]:
    """``[base]/$op``, ``[type]/$op`` and ``[type]/[id]/$op`` of every operation the server
    runs, all from its OperationDefinition: where (``system``/``type``/``instance`` on its
    ``resource`` types), which methods (GET only when it does not ``affectsState``) and
    what it takes (its ``in`` parameters)."""
    from server.operations.registry import operations

    paths: dict[str, dict[str, Any]] = {}
    for operation in operations():
        definition = operation.spec
        types = sorted(operation.types) or ["{type}"]
        places: list[tuple[str, str, str]] = []  # (path, level, type)
        if operation.system_level:
            places.append((f"/fhir/${operation.name}", "System", ""))
        for type in types:
            if operation.type_level:
                places.append((f"/fhir/{type}/${operation.name}", "Type", type))
            if operation.instance_level:
                places.append((f"/fhir/{type}/{{id}}/${operation.name}", "Instance", type))
        for path, level, type in places:
            prefix = "" if type in ("", "{type}") else type[:1].lower() + type[1:]
            base_id = f"{prefix}{_camel(operation.name)}{level}"
            base_id = base_id[:1].lower() + base_id[1:]
            where = {"System": "the server", "Type": type, "Instance": f"a {type}"}[level]
            title = definition.get("title") or definition.get("name")
            summary = f"${operation.name} on {where} ({title})"
            item: dict[str, Any] = {}
            methods = ["get", "post"] if operation.get_allowed else ["post"]
            for method in methods:
                op: dict[str, Any] = {
                    "operationId": f"{base_id}{method.title()}",
                    "summary": summary,
                    "description": str(definition.get("description", "")),
                    "responses": {
                        "200": {"description": "The operation's result"},
                    },
                }
                if operation.long_running:
                    op["responses"]["202"] = {
                        "description": "Accepted (Prefer: respond-async): poll the "
                        "Content-Location URL for the result"
                    }
                op["parameters"] = _query_inputs(operation.query_inputs) if method == "get" else []
                if method == "post":
                    op["requestBody"] = _parameters_body(operation.inputs, operation.takes_resource)
                item[method] = op
            paths[path] = item
    return paths


_OPERATION_ANSWER = "Resource"  # a Parameters resource, or the resource an operation returns


def _operation_item(path: str, op: dict[str, Any], long_running: bool) -> None:
    """Path parameters, headers and answers of one operation path (``_operation_paths``)."""
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, **copy.deepcopy(_PATH_PARAMS[name])}
        for name in re.findall(r"{(\w+)}", path)
    ]
    params += op.get("parameters", [])
    if long_running:
        params.append(_PREFER_ASYNC)
    params += [_FORMAT, _PRETTY]
    op["parameters"] = copy.deepcopy(params)
    op["tags"] = [_tag(path)]
    responses = op["responses"]
    responses["default"] = {"description": "An OperationOutcome describing the error"}
    for code, response in responses.items():
        schema = "OperationOutcome" if code in ("default", "202") else _OPERATION_ANSWER
        response["content"] = _content(FHIR_JSON, schema)


def export() -> dict[str, Any]:
    """The post-processed OpenAPI document of the application."""
    from server.app import create_app
    from server.operations.registry import operations
    from server.settings import Settings

    # the document depends on the routes only: no store is opened, no setting is read
    document: dict[str, Any] = create_app(Settings.model_construct()).openapi()
    document = copy.deepcopy(document)
    for path, item in document.get("paths", {}).items():
        for method, op in item.items():
            if method in ("get", "put", "post", "patch", "delete", "head", "options"):
                _operation(path, op)
    long_running = {o.name for o in operations() if o.long_running}
    for path, item in _operation_paths().items():
        name = path.rsplit("$", 1)[1]
        for op in item.values():
            _operation_item(path, op, name in long_running)
        document["paths"][path] = item
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas.update(_schemas())
    document["tags"] = [
        {
            "name": "system",
            "description": "Whole-system interactions: capabilities, batch/transaction, "
            "history, system-level operations, asynchronous request status",
        },
        {
            "name": "type",
            "description": "Type-level interactions: search, create, history, "
            "conditional update/patch/delete",
        },
        {
            "name": "instance",
            "description": "Instance-level interactions: read, vread, update, "
            "patch, delete, history",
        },
    ]
    return document


def render(document: dict[str, Any] | None = None) -> str:
    """The document as committed: sorted keys, two-space indent, trailing newline."""
    document = export() if document is None else document
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@cache
def rendered() -> bytes:
    """``render()`` as served at ``/openapi.json`` (built once per process)."""
    return render().encode("utf-8")


def write(path: Path = DEFAULT_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    target = write(Path(args[0]) if args else DEFAULT_PATH)
    print(f"wrote {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
