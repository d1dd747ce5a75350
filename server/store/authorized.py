"""The one door to the data: a repository bound to the principal of one request.

Every read, write and search of a request goes through an ``AuthorizedRepository``; the
checks happen here and nowhere else (routes never check permissions). Interaction code is
plain synchronous code that receives an authorized ``Reader`` or ``Unit``; this class decides
where it runs (see ``runner.py``) and wraps the store so each access is checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, TypeVar

from server.auth.principal import Principal
from server.errors import Forbidden
from server.search.query import Criteria, Include, SearchQuery
from server.store.base import (
    HistoryQuery,
    Included,
    Method,
    Origin,
    Page,
    Reader,
    SearchPage,
    Unit,
    Version,
    WriteResult,
)
from server.store.runner import Runner

T = TypeVar("T")


class _Checked:
    def __init__(self, inner: Reader, principal: Principal) -> None:
        self._inner = inner
        self._principal = principal

    def _check(self, interaction: str, type: str | None) -> None:
        if not self._principal.permits(interaction, type):
            raise Forbidden(f"Not permitted: {interaction} on {type or 'the system'}")

    def read(self, type: str, id: str) -> Version | None:
        self._check("read", type)
        return self._inner.read(type, id)

    def versions(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        for type in sorted({type for type, _ in keys}):
            self._check("read", type)
        return self._inner.versions(keys)

    def vread(self, type: str, id: str, version: int) -> Version | None:
        self._check("vread", type)
        return self._inner.vread(type, id, version)

    def history(self, query: HistoryQuery) -> Page:
        self._check("history", query.type)
        return self._inner.history(query)

    def search(self, query: SearchQuery) -> SearchPage:
        type = query.criteria.type
        if type is not None:
            self._check("search-type", type)
        else:
            self._check("search-system", None)
            for each in query.criteria.types:
                self._check("search-type", each)
        if query.total == "estimate" and not self._principal.allow_all:
            # an estimate comes from statistics of every row; a restricted caller's total
            # counts only what it may see
            query = replace(query, total="accurate")
        return self._inner.search(query)

    def include(
        self,
        versions: list[Version],
        includes: tuple[Include, ...],
        limit: int,
        max_bytes: int | None = None,
    ) -> Included:
        """Included resources are reads: of the types an include names up front, of every type
        it returns after."""
        for include in includes:
            if include.reverse:
                self._check("read", include.source_type)
            elif include.target_type is not None:
                self._check("read", include.target_type)
        found = self._inner.include(versions, includes, limit, max_bytes)
        for type in sorted({v.type for v in found.versions}):
            self._check("read", type)
        return found

    def patient_resources(
        self, patient_ids: Sequence[str], params: Mapping[str, Sequence[str]]
    ) -> Iterator[tuple[str, Version]]:
        """A search of each type named (by its reference parameters)."""
        for type in sorted(params):
            self._check("search-type", type)
        return self._inner.patient_resources(patient_ids, params)

    def scan(self, type: str, after: int | None, limit: int) -> list[Version]:
        self._check("search-type", type)
        return self._inner.scan(type, after, limit)


class _CheckedUnit(_Checked):
    _inner: Unit

    def __init__(self, inner: Unit, principal: Principal) -> None:
        super().__init__(inner, principal)
        self._unit = inner

    def match(self, criteria: Criteria, limit: int | None = 2) -> list[Version]:
        self._check("search", criteria.type)
        return self._unit.match(criteria, limit)

    def create(self, type: str, resource: dict[str, Any], *, id: str | None = None) -> WriteResult:
        self._check("create", type)
        return self._unit.create(type, resource, id=id)

    def update(
        self, type: str, id: str, resource: dict[str, Any], *, method: Method = "PUT"
    ) -> WriteResult:
        self._check("patch" if method == "PATCH" else "update", type)
        return self._unit.update(type, id, resource, method=method)

    def delete(self, type: str, id: str) -> WriteResult:
        self._check("delete", type)
        return self._unit.delete(type, id)

    def system(self) -> Unit:
        """The unit itself, unnarrowed: for validation, program rules and the writes rules
        derive (the server's own writes); what it reads never reaches the caller unchecked."""
        return self._unit.system()


class AuthorizedRepository:
    def __init__(self, runner: Runner, principal: Principal, request_id: str | None = None) -> None:
        self.principal = principal
        self.origin = Origin(principal.id, principal.organization, principal.user, request_id)
        self._runner = runner

    @contextmanager
    def reader(self) -> Iterator[Reader]:
        """An authorized reader on the calling thread, blocking (worker threads: long
        operations and asynchronous jobs; request handlers use ``reading``)."""
        with self._runner.reader() as reader:
            yield _Checked(reader, self.principal)

    async def checking(self, fn: Callable[[Reader], T]) -> T:
        """Run ``fn`` with a reader no principal narrows, where the store's reads run, its reads
        in one snapshot where that is cheap: for the validation that prepares a write (what
        it reads never reaches the caller)."""
        return await self._runner.snapshot(fn)

    async def reading(self, fn: Callable[[Reader], T]) -> T:
        """Run ``fn`` with an authorized reader, where the store's reads run."""
        principal = self.principal
        return await self._runner.read(lambda reader: fn(_Checked(reader, principal)))

    async def writing(self, fn: Callable[[Unit], T]) -> T:
        """Run ``fn`` inside one write transaction: all its writes commit together or none do;
        returns once they are durable."""
        principal = self.principal
        return await self._runner.write(lambda unit: fn(_CheckedUnit(unit, principal)), self.origin)
