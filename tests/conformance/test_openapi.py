"""One OpenAPI document: the one served at /openapi.json is the committed openapi/openapi.json,
valid under openapi-spec-validator, describing every route and every FHIR operation with its
parameters."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from openapi_spec_validator import validate

from server.app import create_app
from server.fhir.conformance import conformance
from server.openapi_export import export, render
from server.operations.parameters import PRIMITIVES
from server.operations.registry import operations
from server.settings import Settings
from tests.support import TestClient, fhir_client

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "openapi" / "openapi.json"
FHIR_TYPES = {
    "application/fhir+json",
    "application/json-patch+json",
    "application/x-www-form-urlencoded",
}


def test_committed_document_is_current() -> None:
    assert COMMITTED.is_file(), "openapi/openapi.json is missing: run scripts/export-openapi"
    fresh = render()
    committed = COMMITTED.read_text(encoding="utf-8")
    assert committed == fresh, (
        "openapi/openapi.json is out of date with the application's routes: "
        "run scripts/export-openapi and commit the result"
    )


def test_export_is_deterministic() -> None:
    assert render() == render()
    assert render().endswith("}\n")


def _api_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, APIRoute]]:
    """``(full path, route)`` of every API route, also inside included routers (recent FastAPI
    keeps them nested instead of copying their routes into the application)."""
    for route in routes:
        if isinstance(route, APIRoute):
            if route.include_in_schema:
                yield prefix + route.path_format, route
            continue
        inner = getattr(route, "original_router", None)
        if inner is not None:
            context = getattr(route, "include_context", None)
            if getattr(context, "include_in_schema", True):
                yield from _api_routes(inner.routes, prefix + getattr(context, "prefix", ""))


def test_every_route_is_described() -> None:
    document = export()
    app = create_app(Settings.model_construct())
    routes = list(_api_routes(app.routes))
    found = {route.operation_id for _, route in routes}
    assert {"capabilities", "transactionOrBatch", "read", "create", "searchType"} <= found
    for path, route in routes:
        assert path in document["paths"], f"{path} is missing"
        item = document["paths"][path]
        for method in route.methods - {"HEAD"}:
            op = item.get(method.lower())
            assert op is not None, f"{method} {path} is missing"
            assert op["operationId"] == route.operation_id


def test_operation_ids_are_unique_and_set() -> None:
    ids = [op.get("operationId") for item in export()["paths"].values() for op in item.values()]
    assert all(ids)
    assert len(ids) == len(set(ids))


def test_media_types_are_fhir() -> None:
    document = export()
    for path, item in document["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            body = op.get("requestBody")
            if body is not None:
                assert set(body["content"]) <= FHIR_TYPES, where
            for code, response in op["responses"].items():
                assert "application/json" not in response.get("content", {}), (where, code)
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    assert param.get("description"), (where, param["name"])


def test_request_bodies_follow_the_operation() -> None:
    ops = {op["operationId"]: op for item in export()["paths"].values() for op in item.values()}
    assert set(ops["transactionOrBatch"]["requestBody"]["content"]) == {"application/fhir+json"}
    assert set(ops["create"]["requestBody"]["content"]) == {"application/fhir+json"}
    assert set(ops["update"]["requestBody"]["content"]) == {"application/fhir+json"}
    assert set(ops["patch"]["requestBody"]["content"]) == {"application/json-patch+json"}
    assert set(ops["searchTypePost"]["requestBody"]["content"]) == {
        "application/x-www-form-urlencoded"
    }
    for read_only in ("read", "vread", "searchType", "capabilities", "delete"):
        assert "requestBody" not in ops[read_only]


def test_document_is_valid_json_with_references_that_resolve() -> None:
    document = json.loads(render())
    schemas = document["components"]["schemas"]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                assert ref.startswith("#/components/schemas/")
                assert ref.rsplit("/", 1)[1] in schemas, ref
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("openapi") / "fhir.db"
    with fhir_client(f"sqlite:///{db}") as client:
        yield client


def test_the_served_document_is_the_committed_one(served: TestClient) -> None:
    response = served.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.content == COMMITTED.read_bytes(), (
        "/openapi.json differs from openapi/openapi.json: run scripts/export-openapi"
    )


def test_the_document_is_valid_openapi(served: TestClient) -> None:
    document = served.get("/openapi.json").json()
    validate(document)  # raises on an invalid document (unresolved path parameters included)
    for path, item in document["paths"].items():
        declared = {p["name"] for op in item.values() for p in op.get("parameters", [])
                    if p["in"] == "path"}  # fmt: skip
        assert declared == set(re.findall(r"{(\w+)}", path)), path


def _places(operation: Any) -> Iterator[tuple[str, str]]:
    """(path, level) of every place the registry runs ``operation``."""
    if operation.system_level:
        yield f"/fhir/${operation.name}", "system"
    for type in sorted(operation.types) or ["{type}"]:
        if operation.type_level:
            yield f"/fhir/{type}/${operation.name}", "type"
        if operation.instance_level:
            yield f"/fhir/{type}/{{id}}/${operation.name}", "instance"


def test_every_operation_is_described_with_its_parameters() -> None:
    paths = export()["paths"]
    for operation in operations():
        definition = conformance().resource("OperationDefinition", operation.definition)
        assert definition is not None
        inputs = [p for p in definition.get("parameter", []) if p["use"] == "in"]
        for path, _ in _places(operation):
            assert path in paths, f"{path} is missing"
            item = paths[path]
            assert ("get" in item) == (not operation.affects_state), path
            if "get" in item:
                query = {p["name"]: p for p in item["get"]["parameters"] if p["in"] == "query"}
                for p in inputs:
                    if p.get("type") in PRIMITIVES and not p.get("part"):
                        assert p["name"] in query, (path, p["name"])
                        assert query[p["name"]]["required"] == (int(p["min"]) > 0)
            body = item["post"]["requestBody"]["content"]["application/fhir+json"]["schema"]
            parameters = body["oneOf"][0] if "oneOf" in body else body
            names = parameters["properties"]["parameter"]["items"]["properties"]
            assert sorted(p["name"] for p in inputs) == sorted(
                names.get("name", {}).get("enum", [])
            )
