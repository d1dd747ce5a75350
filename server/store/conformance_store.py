"""The conformance resources as a read-only store: read, vread, history and search in memory.

StructureDefinitions, ValueSets, CodeSystems, ConceptMaps, SearchParameters and
OperationDefinitions are definitions, not data: they come from ``profiles/`` and the vendored
R4 package (:mod:`server.fhir.conformance`) and are served from memory, never from the database,
so a served definition is always the one the server validates and searches with. Each has one
version (``1``), last updated when the process loaded it. Searches use the same parser and the
same in-memory matcher (:mod:`server.search.match`) as subscriptions, so every search parameter
and modifier of these types works; ``_sort`` follows the SQL store's rule (ascending by a
resource's smallest value, descending by its largest; resources without a value last).
Includes across to stored data are not followed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from server.fhir.conformance import CONFORMANCE_TYPES, Conformance
from server.fhir.instant import format_instant
from server.ports import HistoryQuery, Included, Page, SearchPage, Version, fitting
from server.search.access_facts import access_facts
from server.search.index import Indexer
from server.search.match import compile_matcher
from server.search.query import Clause, Criteria, Cursor, Include, SearchQuery, SortKey
from server.search.rows import IndexRows

_SORT_COLUMNS = {"date": (2, 3), "number": (2, 3), "quantity": (5, 6), "string": (2, 2)}
_TOKEN, _URI, _REFERENCE = "token", "uri", "reference"


@dataclass(frozen=True, slots=True)
class _Entry:
    type: str
    id: str
    body: bytes
    resource: dict[str, Any]
    rows: IndexRows
    position: int
    facts: tuple[str, str]


class ConformanceStore:
    """:class:`server.ports.Reader` of the conformance types (see the module docstring)."""

    def __init__(self, conformance: Conformance, indexer: Indexer, loaded_at: int | None = None):
        self.loaded_at = loaded_at if loaded_at is not None else time.time_ns() // 1000
        stamp = format_instant(self.loaded_at)
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._by_type: dict[str, list[_Entry]] = {t: [] for t in CONFORMANCE_TYPES}
        ordered = sorted(
            conformance.resources, key=lambda r: (r["resourceType"], r.get("url", ""), r["id"])
        )
        for position, resource in enumerate(ordered, start=1):
            type, id = resource["resourceType"], resource["id"]
            served = {**resource, "meta": {**resource.get("meta", {}), "versionId": "1"}}
            served["meta"]["lastUpdated"] = stamp
            rows = indexer.rows(type, served)
            facts = access_facts(type, id, rows)
            entry = _Entry(type, id, orjson.dumps(served), served, rows, position, facts)
            self._entries[(type, id)] = entry
            self._by_type[type].append(entry)

    @staticmethod
    def serves(type: str | None) -> bool:
        return type in CONFORMANCE_TYPES

    def _version(self, entry: _Entry, position: int = 0) -> Version:
        labels, owners = entry.facts
        return Version(
            entry.type,
            entry.id,
            1,
            self.loaded_at,
            False,
            entry.body,
            "PUT",
            position,
            labels,
            owners,
        )

    # -- Reader ----------------------------------------------------------------------------

    def _within(self, entry: _Entry, within: Sequence[Clause]) -> bool:
        """Whether ``entry`` satisfies an access policy's clauses (``Reader``)."""
        if not within:
            return True
        matcher = compile_matcher(Criteria(entry.type, (), tuple(within)))
        return matcher(
            entry.type,
            entry.resource,
            _Rows(self),
            id=entry.id,
            last_updated=self.loaded_at,
            resolve=self._resolve,
            referrers=self._referrers,
        )

    def read(self, type: str, id: str, within: Sequence[Clause] = ()) -> Version | None:
        entry = self._entries.get((type, id))
        if entry is None or not self._within(entry, within):
            return None
        return self._version(entry)

    def visible(self, type: str, id: str) -> bool:
        return True

    def vread(
        self, type: str, id: str, version: int, within: Sequence[Clause] = ()
    ) -> Version | None:
        return self.read(type, id, within) if version == 1 else None

    def versions(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        return {key: 1 for key in keys if key in self._entries}

    def history(self, query: HistoryQuery) -> Page:
        if query.id is not None:
            assert query.type is not None
            found = self._entries.get((query.type, query.id))
            entries = [] if found is None else [found]
        else:
            entries = list(self._by_type.get(query.type or "", []))
        entries = [e for e in entries if self._within(e, query.within)]
        if query.since is not None and self.loaded_at < query.since:
            entries = []
        if query.at is not None and self.loaded_at >= query.at[1]:
            entries = []
        # history lists newest first: keyset positions decrease
        entries.sort(key=lambda e: -e.position)
        if query.before_seq is not None:
            entries = [e for e in entries if e.position < query.before_seq]
        page = entries[: query.count]
        kept = fitting([len(e.body) for e in page], query.max_bytes)
        return Page(
            [self._version(e, e.position) for e in page[:kept]],
            has_more=len(entries) > kept,
            cut=kept < len(page),
        )

    def _matches(self, criteria: Criteria) -> list[_Entry]:
        candidates = self._by_type.get(criteria.type or "", [])
        matcher = compile_matcher(criteria)
        indexer = _Rows(self)
        return [
            e
            for e in candidates
            if matcher(
                e.type,
                e.resource,
                indexer,
                id=e.id,
                last_updated=self.loaded_at,
                resolve=self._resolve,
                referrers=self._referrers,
            )
        ]

    def count_by(
        self, criteria: Criteria, param: str, target_type: str | None = None
    ) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self._matches(criteria):
            targets = {
                f"{row[2]}/{row[3]}"
                for row in entry.rows.reference
                if row[0] == param and row[2] and row[3]
                and (target_type is None or row[2] == target_type)
            }
            for target in targets:
                counts[target] = counts.get(target, 0) + 1
        return counts

    def stamp(self, type: str) -> tuple[Any, ...] | None:
        """None: the definitions are few and held in memory (nothing to keep under a stamp)."""
        return None

    def search(self, query: SearchQuery) -> SearchPage:
        found = self._matches(query.criteria)
        if query.sort:
            found = _sorted(found, query.sort)
        total = len(found) if query.total != "none" else None
        start, end = 0, query.count
        if query.cursor is not None:
            if query.cursor.backward:
                end = min(query.cursor.seq, len(found))
                start = max(0, end - query.count)
            else:
                start = query.cursor.seq
                end = start + query.count
        page = found[start:end]
        backward = query.cursor is not None and query.cursor.backward
        nearest = reversed(page) if backward else page  # a page is cut far from its cursor
        kept = fitting([len(e.body) for e in nearest], query.max_bytes)
        cut = kept < len(page)
        if cut:
            if backward:
                start = end - kept
            else:
                end = start + kept
            page = found[start:end]

        def cursor(position: int, backward: bool) -> Cursor:
            values = tuple(_sort_value(found[position], key) for key in query.sort)
            return Cursor(values, position + (0 if backward else 1), backward)

        return SearchPage(
            [self._version(e, start + i) for i, e in enumerate(page)],
            next=cursor(end - 1, False) if page and end < len(found) else None,
            previous=cursor(start, True) if page and start > 0 else None,
            total=total,
            cut=cut,
        )

    def include(
        self,
        versions: list[Version],
        includes: tuple[Include, ...],
        limit: int,
        within: Sequence[Clause] = (),
        max_bytes: int | None = None,
    ) -> Included:
        return Included([])

    def patient_resources(
        self,
        patient_ids: Sequence[str],
        params: Mapping[str, Sequence[str]],
        within: Sequence[Clause] = (),
    ) -> Iterator[tuple[str, Version]]:
        """Definitions belong to no patient."""
        return iter(())

    def scan(
        self, type: str, after: int | None, limit: int, within: Sequence[Clause] = ()
    ) -> list[Version]:
        entries = [
            e
            for e in self._by_type.get(type, [])
            if (after is None or e.position > after) and self._within(e, within)
        ]
        return [self._version(e, e.position) for e in entries[: max(limit, 0)]]

    # -- matcher environment -----------------------------------------------------------------

    def _resolve(self, type: str, id: str) -> dict[str, Any] | None:
        entry = self._entries.get((type, id))
        return None if entry is None else entry.resource

    def _referrers(
        self, source_type: str, param: str, target_type: str, target_id: str
    ) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for entry in self._by_type.get(source_type, []):
            for row in entry.rows.reference:
                if row[0] == param and row[2] == target_type and row[3] == target_id:
                    out.append((entry.id, entry.resource))
                    break
        return out


class _Rows:
    """The precomputed index rows of the store's entries, as the matcher's row source."""

    def __init__(self, store: ConformanceStore) -> None:
        self._store = store

    def rows(self, type: str, resource: dict[str, Any]) -> IndexRows:
        entry = self._store._entries.get((type, resource.get("id", "")))
        return entry.rows if entry is not None else IndexRows()


def _sort_value(entry: _Entry, key: SortKey) -> Any:
    if key.param == "_id":
        return entry.id
    if key.param == "_lastUpdated":
        return 0
    table = (key.table or "").removeprefix("search_")
    pick: Callable[[tuple[Any, ...]], Any]
    rows: list[tuple[Any, ...]] = [r for r in getattr(entry.rows, table, []) if r[0] == key.param]
    if table in _SORT_COLUMNS:
        low, high = _SORT_COLUMNS[table]
        column = high if key.descending else low

        def pick(row: tuple[Any, ...]) -> Any:
            return row[column]
    elif table == _TOKEN:

        def pick(row: tuple[Any, ...]) -> Any:
            return row[3]
    elif table == _URI:

        def pick(row: tuple[Any, ...]) -> Any:
            return row[2]
    elif table == _REFERENCE:

        def pick(row: tuple[Any, ...]) -> Any:
            return row[4] or f"{row[2]}/{row[3]}"
    else:
        return None
    values = [pick(r) for r in rows]
    if not values:
        return None
    return max(values) if key.descending else min(values)


def _sorted(entries: list[_Entry], keys: tuple[SortKey, ...]) -> list[_Entry]:
    """Stable multi-key sort; missing values after present ones in either direction."""
    out = sorted(entries, key=lambda e: e.position)
    for key in reversed(keys):
        present = [e for e in out if _sort_value(e, key) is not None]
        missing = [e for e in out if _sort_value(e, key) is None]
        present.sort(key=lambda e: _sort_value(e, key), reverse=key.descending)
        out = present + missing
    return out

