"""The FHIR operations the server runs: each OperationDefinition of ``profiles/operations/``
joined with the module that implements it.

The definition is the only source of what an operation *is*: its name (``code``), the resource
types it is defined on (``resource``), where it runs (``system`` / ``type`` / ``instance``),
whether it changes data (``affectsState``: POST only, inside a write unit) and its parameters
(parsed by :mod:`server.operations.parameters`). The implementation (``call.Implementation``) only
says what it does. The HTTP router, the CapabilityStatement and the OpenAPI description all
read this table, so an operation is advertised exactly where, and as, it runs.

A definition of the package without an implementation, or an implementation without its
definition, stops start-up (:class:`OperationError`): the server would otherwise advertise an
operation it does not run, or run one it does not describe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from server.auth.operation_rules import Needs
from server.fhir.conformance import Conformance, conformance
from server.operations import (
    cs_eligibility,
    ecm_assign,
    ecm_eligibility,
    ecm_screen,
    everything,
    task_transitions,
    terminology,
    validate,
)
from server.operations.call import Answer, Call, Implementation, Inputs
from server.operations.parameters import PRIMITIVES

__all__ = ["Call", "Implementation", "Operation", "OperationError", "find", "operations"]

# every operation the server implements (the definitions say where and how they are called)
IMPLEMENTATIONS: tuple[Implementation, ...] = (
    validate.IMPLEMENTATION,
    ecm_eligibility.MEMBER,
    ecm_eligibility.POPULATION,
    cs_eligibility.IMPLEMENTATION,
    task_transitions.IMPLEMENTATION,
    ecm_screen.IMPLEMENTATION,
    ecm_assign.IMPLEMENTATION,
    everything.IMPLEMENTATION,
    *terminology.IMPLEMENTATIONS,
)

_ANY_TYPE = frozenset({"Resource", "DomainResource"})


class OperationError(Exception):
    """An OperationDefinition and the implementations that cannot be joined."""


@dataclass(frozen=True, slots=True)
class Operation:
    """An operation as the server runs it: its OperationDefinition and its implementation."""

    spec: Mapping[str, Any]  # the OperationDefinition resource
    implementation: Implementation
    name: str = field(init=False)  # ``code``, without the "$"
    types: frozenset[str] = field(init=False)  # the types it is defined on; empty = every type
    system_level: bool = field(init=False)
    type_level: bool = field(init=False)
    instance_level: bool = field(init=False)
    affects_state: bool = field(init=False)
    inputs: tuple[Mapping[str, Any], ...] = field(init=False)  # ``use: in`` parameters

    def __post_init__(self) -> None:
        spec = self.spec
        where = f"OperationDefinition/{spec.get('id')}"
        code = spec.get("code")
        if not isinstance(code, str) or not code:
            raise OperationError(f"{where} has no code")
        levels = {level: spec.get(level) for level in ("system", "type", "instance")}
        if not all(isinstance(v, bool) for v in levels.values()):
            raise OperationError(f"{where}: system, type and instance must be booleans")
        if not any(levels.values()):
            raise OperationError(f"{where} runs at no level (system, type, instance)")
        resources = spec.get("resource", [])
        if (levels["type"] or levels["instance"]) and not resources:
            raise OperationError(f"{where} runs on a type but names no resource")
        affects = spec.get("affectsState", False)
        if not isinstance(affects, bool):
            raise OperationError(f"{where}: affectsState must be a boolean")
        set_ = object.__setattr__
        set_(self, "name", code.removeprefix("$"))
        set_(
            self, "types", frozenset(resources) if _ANY_TYPE.isdisjoint(resources) else frozenset()
        )
        set_(self, "system_level", levels["system"])
        set_(self, "type_level", levels["type"])
        set_(self, "instance_level", levels["instance"])
        set_(self, "affects_state", affects)
        set_(self, "inputs", tuple(p for p in spec.get("parameter", []) if p.get("use") == "in"))

    @classmethod
    def of(
        cls, spec: Mapping[str, Any], run: Callable[[Call], Answer], **behaviour: Any
    ) -> Operation:
        """The operation ``spec`` defines, run by ``run`` (``behaviour``: the other fields of
        :class:`Implementation`)."""
        return cls(spec, Implementation(str(spec.get("id")), run, **behaviour))

    # -- from the definition ----------------------------------------------------------------

    @property
    def definition(self) -> str:
        """The OperationDefinition id."""
        return str(self.spec["id"])

    @property
    def url(self) -> str:
        return str(self.spec["url"])

    @property
    def get_allowed(self) -> bool:
        """Whether GET may invoke it (R4 operations.html: only when it does not affect
        state; then only its primitive parameters can be given, in the query)."""
        return not self.affects_state

    @property
    def takes_resource(self) -> bool:
        """Whether a bare resource body stands for its ``resource`` input."""
        return any(p.get("type") == "Resource" or p.get("name") == "resource" for p in self.inputs)

    @property
    def query_inputs(self) -> list[Mapping[str, Any]]:
        """The inputs a GET query can carry (primitive, not a tuple)."""
        return [p for p in self.inputs if not p.get("part") and p.get("type") in PRIMITIVES]

    def applies_to(self, type: str) -> bool:
        return not self.types or type in self.types

    def runs_at(self, level: str, type: str = "") -> bool:
        """Whether it runs at ``level`` (``system``, ``type``, ``instance``) on ``type``."""
        if level == "system":
            return self.system_level
        at = self.type_level if level == "type" else self.instance_level
        return at and self.applies_to(type)

    # -- from the implementation ------------------------------------------------------------

    @property
    def run(self) -> Callable[[Call], Answer]:
        return self.implementation.run

    @property
    def long_running(self) -> bool:
        return self.implementation.long_running

    @property
    def progress_unit(self) -> str:
        return self.implementation.progress_unit

    @property
    def needs(self) -> tuple[Needs, ...] | None:
        return self.implementation.needs

    def writes(self, params: Inputs) -> bool:
        """Whether the call with ``params`` may write, so runs inside one write unit."""
        if not self.affects_state:
            return False
        when = self.implementation.writes_when
        return when is None or when(params)


def build(
    definitions: Conformance, implementations: Iterable[Implementation] = IMPLEMENTATIONS
) -> tuple[Operation, ...]:
    """The operations of the package's OperationDefinitions, each with its implementation."""
    by_id: dict[str, Implementation] = {}
    for implementation in implementations:
        if implementation.definition in by_id:
            raise OperationError(f"two implementations of {implementation.definition}")
        by_id[implementation.definition] = implementation
    table = []
    for spec in sorted(definitions.local("OperationDefinition"), key=lambda d: str(d["id"])):
        if str(spec["id"]) not in by_id:
            raise OperationError(f"OperationDefinition/{spec['id']} has no implementation")
        table.append(Operation(spec, by_id.pop(str(spec["id"]))))
    if by_id:
        raise OperationError(
            f"no OperationDefinition in the package for {', '.join(sorted(by_id))}"
        )
    return tuple(table)


_TABLES: dict[int, tuple[Conformance, tuple[Operation, ...]]] = {}


def operations(definitions: Conformance | None = None) -> list[Operation]:
    """Every operation of ``definitions`` (default: the server's ``profiles/``)."""
    definitions = conformance() if definitions is None else definitions
    found = _TABLES.get(id(definitions))
    if found is None or found[0] is not definitions:
        found = (definitions, build(definitions))
        _TABLES[id(definitions)] = found
    return list(found[1])


def find(
    level: str, type: str, name: str, table: Iterable[Operation] | None = None
) -> Operation | None:
    """The operation ``name`` that runs at ``level`` on ``type`` ("" at system level)."""
    for operation in operations() if table is None else table:
        if operation.name == name and operation.runs_at(level, type):
            return operation
    return None

