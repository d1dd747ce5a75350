"""The FHIR operations the server implements: name, where they apply, definition, handler.

Each operation is an OperationDefinition in ``profiles/operations/`` (its inputs are parsed
against it by :mod:`server.operations.parameters`) and a handler here. The HTTP router and the
CapabilityStatement both read this table, so an operation is advertised exactly where it runs.

Every write an operation makes goes through the write pipeline (``server/writes/``):
``Call.write`` takes a ``Write`` and returns what was written, validated and ruled like any
other write. A ``long_running`` operation runs on a worker thread, never inside a write unit: it
reads through ``Call.reader`` (opened on that thread) and each ``Call.write`` is one write unit
(through group commit). With ``Prefer: respond-async`` it runs as an asynchronous
job (``server/jobs.py``): ``Call.progress`` reports how far it got, ``Call.cancelled`` says the
client cancelled it (stop soon: whatever it returns then is discarded).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.auth.operation_rules import Needs
from server.fhir.conformance import Conformance
from server.fhir.terminology import Terminology
from server.ports import Reader
from server.services import Services
from server.settings import Settings
from server.store.base import Event
from server.writes.write import Write, Written


def _no_progress(done: int, total: int | None) -> None:
    """Progress goes nowhere (a call that is not an asynchronous job)."""


def _never() -> bool:
    return False


@dataclass(frozen=True, slots=True)
class Call:
    """One invocation: where it was called, its parsed inputs and what it may read.

    ``type`` is "" at system level (``[base]/$op``). ``write`` runs one write through the
    pipeline and returns once it is durable (a long-running operation: in a unit of its own;
    another operation that changes state: in the unit it runs in, ``reader`` being that
    unit); None for operations that do not change state and for calls that do not write
    (``Operation.writes``)."""

    settings: Settings
    type: str
    id: str | None
    params: dict[str, list[Any]]
    reader: Reader  # the store
    conformance: Conformance
    instance: dict[str, Any] | None = None  # the resource of an instance-level call
    write: Callable[[Write], Written] | None = None
    progress: Callable[[int, int | None], None] = _no_progress  # (done, total)
    cancelled: Callable[[], bool] = _never
    prefer_async: bool = False  # runs as an asynchronous job (Prefer: respond-async)
    events: Callable[[str, str], list[Event]] | None = None  # a resource's outbox events
    # the system reader (no principal narrows it): what it reads reaches the caller only
    # through the operation's output policy (``output.py``); None where the operation runs
    # on the caller's view alone
    system: Reader | None = None
    restricted: bool = False  # the caller is narrowed by access policies
    # the server's search, validation and definitions services (``server/services.py``)
    services: Services = field(kw_only=True)

    @property
    def terminology(self) -> Terminology:
        return self.conformance.terminology

    @property
    def fhir_base(self) -> str:
        return self.settings.fhir_base

    @property
    def level(self) -> str:
        """``system``, ``type`` or ``instance``."""
        if not self.type:
            return "system"
        return "type" if self.id is None else "instance"


@dataclass(frozen=True, slots=True)
class Operation:
    name: str  # without the "$"
    types: frozenset[str]  # resource types it is defined on; empty = every type
    type_level: bool
    instance_level: bool
    definition: str  # the OperationDefinition id in profiles/operations/
    run: Callable[[Call], dict[str, Any]]
    affects_state: bool = False
    system_level: bool = False  # [base]/$name
    long_running: bool = False  # on a worker thread; Prefer: respond-async makes it a job
    progress_unit: str = "items"  # what its progress counts (X-Progress: "3 of 10 members")
    # its entry in the operations table (``server/auth/operation_rules.py``): what a caller
    # must be permitted before it runs; None: no entry, each read and write it makes is
    # checked by the door alone
    needs: tuple[Needs, ...] | None = None
    # of an operation that affects state, which calls write (by their parsed inputs): the
    # others run on a reader, outside any write unit (no writers' lock); None: every call
    writes_when: Callable[[dict[str, list[Any]]], bool] | None = None

    def applies_to(self, type: str) -> bool:
        return not self.types or type in self.types

    def writes(self, params: dict[str, list[Any]]) -> bool:
        """Whether the call with ``params`` may write, so runs inside one write unit."""
        if not self.affects_state:
            return False
        return self.writes_when is None or self.writes_when(params)


def operations() -> list[Operation]:
    """Every operation (imported here so the modules stay free of the table)."""
    from server.operations import (
        cs_eligibility,
        ecm_assign,
        ecm_eligibility,
        ecm_screen,
        task_transitions,
        terminology,
        validate,
    )

    table = [
        validate.OPERATION,
        ecm_eligibility.MEMBER,
        ecm_eligibility.POPULATION,
        cs_eligibility.OPERATION,
        task_transitions.OPERATION,
        ecm_screen.OPERATION,
        ecm_assign.OPERATION,
    ]
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
    """The operation ``name`` defined on ``type`` (at type or instance level)."""
    for operation in operations():
        if (
            operation.name == name
            and (operation.type_level or operation.instance_level)
            and operation.applies_to(type)
        ):
            return operation
    return None


def find_system(name: str) -> Operation | None:
    """The system-level operation ``name``."""
    for operation in operations():
        if operation.name == name and operation.system_level:
            return operation
    return None
