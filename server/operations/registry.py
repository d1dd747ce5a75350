"""The FHIR operations the server implements: name, where they apply, definition, handler.

Each operation is an OperationDefinition in ``profiles/operations/`` (its inputs are parsed
against it by :mod:`server.operations.parameters`) and a handler here. The HTTP router and the
CapabilityStatement both read this table, so an operation is advertised exactly where it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.fhir.conformance import Conformance
from server.fhir.terminology import Terminology
from server.settings import Settings
from server.store.base import Reader


@dataclass(frozen=True, slots=True)
class Call:
    """One invocation: where it was called, its parsed inputs and what it may read."""

    settings: Settings
    type: str
    id: str | None
    params: dict[str, list[Any]]
    reader: Reader  # the store
    conformance: Conformance
    instance: dict[str, Any] | None = None  # the resource of an instance-level call

    @property
    def terminology(self) -> Terminology:
        return self.conformance.terminology


@dataclass(frozen=True, slots=True)
class Operation:
    name: str  # without the "$"
    types: frozenset[str]  # resource types it is defined on; empty = every type
    type_level: bool
    instance_level: bool
    definition: str  # the OperationDefinition id in profiles/operations/
    run: Callable[[Call], dict[str, Any]]
    affects_state: bool = False

    def applies_to(self, type: str) -> bool:
        return not self.types or type in self.types


def operations() -> list[Operation]:
    """Every operation (imported here so the modules stay free of the table)."""
    from server.operations import terminology, validate

    table = [validate.OPERATION]
    for (type, name), (definition, handler) in sorted(terminology.TERMINOLOGY_OPERATIONS.items()):
        table.append(
            Operation(
                name.removeprefix("$"),
                frozenset({type}),
                type_level=True,
                instance_level=True,
                definition=definition,
                run=_terminology_handler(handler),
            )
        )
    return table


def _terminology_handler(
    handler: Callable[[Terminology, dict[str, Any] | None, dict[str, list[Any]]], dict[str, Any]],
) -> Callable[[Call], dict[str, Any]]:
    def run(call: Call) -> dict[str, Any]:
        return handler(call.terminology, call.instance, call.params)

    return run


def find(type: str, name: str) -> Operation | None:
    for operation in operations():
        if operation.name == name and operation.applies_to(type):
            return operation
    return None
