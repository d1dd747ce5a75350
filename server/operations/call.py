"""What an operation module implements: its behaviour, bound to an OperationDefinition.

An operation is data plus behaviour. The data is its OperationDefinition in
``profiles/operations/`` (code, resource types, levels, ``affectsState``, parameters): the
registry (``registry.py``) reads it from there and nothing in Python restates it. The behaviour is
an :class:`Implementation` here: the handler that runs a :class:`Call`, and what only the program
knows -- whether it runs on a worker thread, what its progress counts, its entry of the
operations table (``server/auth/operation_rules.py``) and which of its calls write.

Operation modules import this module, never the registry, so the registry may import them.

Every write an operation makes goes through the write pipeline (``server/writes/``):
``Call.write`` takes a typed ``Write`` and returns what was written, validated and ruled like any
other write. A call of an operation that affects state runs inside one write unit (the router
opens it) unless its ``writes_when`` says the call writes nothing. A ``long_running`` operation
runs on a worker thread, never inside a write unit: it reads through ``Call.reader`` (opened on
that thread) and each ``Call.write`` is one write unit (through group commit). With
``Prefer: respond-async`` it runs as an asynchronous job (``server/jobs.py``): ``Call.progress``
reports how far it got, ``Call.cancelled`` says the client cancelled it (stop soon: whatever it
returns then is discarded).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.auth.operation_rules import Needs
from server.fhir.conformance import Conformance
from server.fhir.terminology import Terminology
from server.ports import Reader
from server.search.parse import SearchRequest
from server.services import Services
from server.settings import Settings
from server.store.base import Event
from server.writes.write import Write, Written

Inputs = dict[str, list[Any]]
# what a handler answers: a resource (Parameters, OperationOutcome, ...) as JSON, or the bytes
# of a Bundle already serialised (a page of stored resources, ``Call.page``)
Answer = dict[str, Any] | bytes


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
    (``Implementation.writes_when``)."""

    settings: Settings
    type: str
    id: str | None
    params: Inputs
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
    # one page of a search as a searchset Bundle of at most the response bound (the router's
    # search paging, links under the given path); None where the call cannot page
    page: Callable[[SearchRequest, str], bytes] | None = None
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
class Implementation:
    """The behaviour of the operation whose OperationDefinition is ``definition``."""

    definition: str  # the OperationDefinition id in profiles/operations/
    run: Callable[[Call], Answer]
    long_running: bool = False  # on a worker thread; Prefer: respond-async makes it a job
    progress_unit: str = "items"  # what its progress counts (X-Progress: "3 of 10 members")
    # its entry in the operations table (``server/auth/operation_rules.py``): what a caller
    # must be permitted before it runs; None: no entry, each read and write it makes is
    # checked by the door alone
    needs: tuple[Needs, ...] | None = None
    # of an operation that affects state, which calls write (by their parsed inputs): the
    # others run on a reader, outside any write unit (no writers' lock); None: every call
    writes_when: Callable[[Inputs], bool] | None = None
