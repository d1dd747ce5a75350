"""Search in the SQL store: every clause, sorting, keyset paging, totals and includes.

Each resource carries the index rows it should get under ``idx`` (a fake row source hands them
to the store), so these tests pin the SQL semantics independently of the real indexer. Every
test runs on SQLite and on PostgreSQL with the same assertions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from server.errors import InvalidSearch
from server.ports import SearchPage, Unit, UpdateMode, Version, WriteResult
from server.search.query import (
    ChainClause,
    Clause,
    CompartmentClause,
    CompositeClause,
    Criteria,
    Cursor,
    DateClause,
    HasClause,
    IdClause,
    Include,
    LastUpdatedClause,
    MissingClause,
    NumberClause,
    NumberValue,
    PerTypeClause,
    Prefix,
    QuantityClause,
    QuantityValue,
    ReferenceClause,
    ReferenceValue,
    SearchQuery,
    SortKey,
    StringClause,
    TokenClause,
    Total,
    UriClause,
)
from server.search.rows import IndexRows
from server.store.runner import Runner
from server.store.sql.adapter import SqlRepository, _contradicted, write_index
from server.store.sql.dialect import open_dialect
from server.store.sql.query import PROBE_LIMIT
from tests.support import postgres_database

INDEX_TABLES = (
    "search_token",
    "search_string",
    "search_reference",
    "search_date",
    "search_number",
    "search_quantity",
    "search_uri",
)
UCUM = "http://unitsofmeasure.org"


class FakeRows:
    """Index rows taken from the resource's own ``idx`` element: ``{table: [row, ...]}``."""

    def rows(self, type: str, resource: dict[str, Any]) -> IndexRows:
        idx = resource.get("idx", {})
        return IndexRows(**{name: [tuple(row) for row in rows] for name, rows in idx.items()})


class Store:
    """A repository on one database, written through group commit like the server does."""

    def __init__(self, repo: SqlRepository) -> None:
        self.repo = repo
        self.runner = Runner(repo, 2)

    def write(self, job: Callable[[Unit], Any]) -> Any:
        async def run() -> Any:
            return await self.runner.write(job)

        return asyncio.run(run())

    def put(self, type: str, id: str, **idx: list[tuple[Any, ...]]) -> Version:
        body = {"resourceType": type, "idx": idx}
        result: WriteResult = self.write(lambda unit: unit.update(type, id, body))
        assert result.version is not None
        return result.version

    def delete(self, type: str, id: str) -> None:
        self.write(lambda unit: unit.delete(type, id))

    def page(self, query: SearchQuery) -> SearchPage:
        with self.repo.reader() as reader:
            return reader.search(query)

    def ids(self, type: str | None, *clauses: Clause, types: tuple[str, ...] = ()) -> list[str]:
        criteria = Criteria(type, (), clauses, types)
        return [v.id for v in self.page(SearchQuery(criteria, 1000)).items]

    def include(
        self, versions: list[Version], includes: tuple[Include, ...], limit: int = 100
    ) -> tuple[list[str], bool]:
        with self.repo.reader() as reader:
            found = reader.include(versions, includes, limit)
        return [f"{v.type}/{v.id}" for v in found.versions], found.cut is not None

    def index_rows(self, type: str, id: str) -> int:
        with self.repo.reader() as reader:
            conn = reader._conn
            return sum(
                conn.execute(
                    f"SELECT COUNT(*) FROM {table} WHERE rtype = ? AND id = ?", (type, id)
                ).fetchone()[0]
                for table in INDEX_TABLES
            )

    def clear(self) -> None:
        with self.repo.sql_dialect.writing() as conn:
            for table in ("resource", "resource_history", *INDEX_TABLES):
                conn.execute(f"DELETE FROM {table}")

    def close(self) -> None:
        self.runner.close()
        self.repo.close()


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def _store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    def open_url(url: str) -> Store:
        repo = SqlRepository(open_dialect(url, pool_size=2), FakeRows())
        repo.migrate()
        return Store(repo)

    if request.param == "sqlite":
        folder: Path = tmp_path_factory.mktemp("search")
        store = open_url(f"sqlite:///{folder / 'search.db'}")
        yield store
        store.close()
    else:
        with postgres_database(request.getfixturevalue("postgres_url")) as url:
            store = open_url(url)
            yield store
            store.close()


@pytest.fixture
def store(_store: Store) -> Store:
    _store.clear()
    return _store


def tok(param: str, system: str, code: str, grp: int = 0) -> tuple[str, int, str, str]:
    return (param, grp, system, code)


def ref(param: str, target: str = "", url: str = "") -> tuple[str, int, str, str, str]:
    type, _, id = target.partition("/")
    return (param, 0, type, id, url)


def num(value: float, prefix: Prefix = "eq", precision: float = 0.5) -> NumberValue:
    return NumberValue(prefix, value, value - precision, value + precision)


# -- clauses -----------------------------------------------------------------------------------


def test_token_forms_and_not(store: Store) -> None:
    store.put("Patient", "t1", token=[tok("identifier", "A", "1")])
    store.put("Patient", "t2", token=[tok("identifier", "B", "1")])
    store.put("Patient", "t3", token=[tok("identifier", "", "1")])
    store.put("Patient", "t4", token=[tok("identifier", "A", "2"), tok("other", "A", "1")])
    store.put("Patient", "t5")

    def ids(*values: tuple[str | None, str | None], negate: bool = False) -> list[str]:
        return sorted(store.ids("Patient", TokenClause("identifier", values, negate)))

    assert ids((None, "1")) == ["t1", "t2", "t3"]
    assert ids(("A", "1")) == ["t1"]
    assert ids(("", "1")) == ["t3"]
    assert ids(("A", None)) == ["t1", "t4"]
    assert ids(("A", "1"), ("B", "1")) == ["t1", "t2"]
    assert ids((None, "X")) == []  # codes are case-sensitive
    assert ids(("A", "1"), negate=True) == ["t2", "t3", "t4", "t5"]
    assert ids(("A", "1"), ("B", None), negate=True) == ["t3", "t4", "t5"]
    # AND of two clauses on the same parameter
    both = store.ids(
        "Patient",
        TokenClause("identifier", ((None, "1"),)),
        TokenClause("identifier", (("A", None),)),
    )
    assert both == ["t1"]


def test_string_start_contains_exact(store: Store) -> None:
    store.put("Patient", "s1", string=[("name", 0, "smith", "Smith")])
    store.put("Patient", "s2", string=[("name", 0, "smithson", "Smithson")])
    store.put("Patient", "s3", string=[("name", 0, "goldsmith", "Goldsmith")])
    store.put("Patient", "s4", string=[("name", 0, "50%_off", "50%_Off")])
    store.put("Patient", "s5", string=[("name", 0, "50xyoff", "50xYoff")])
    store.put("Patient", "s6", string=[("name", 0, "jose", "José")])
    store.put("Patient", "s7", string=[("name", 0, "東京", "東京")])

    def ids(mode: Any, *values: str) -> list[str]:
        return sorted(store.ids("Patient", StringClause("name", mode, values)))

    assert ids("start", "smith") == ["s1", "s2"]
    assert ids("start", "smiths") == ["s2"]
    assert ids("start", "jos") == ["s6"]
    assert ids("start", "jose") == ["s6"]
    assert ids("start", "東") == ["s7"]
    assert ids("start", "京") == []
    assert ids("contains", "京") == ["s7"]
    assert ids("start", "mith") == []
    assert ids("start", "smith", "gold") == ["s1", "s2", "s3"]
    assert ids("contains", "mith") == ["s1", "s2", "s3"]
    assert ids("contains", "%_") == ["s4"]  # LIKE wildcards are literal text
    assert ids("contains", "0%") == ["s4"]
    assert ids("contains", "_") == ["s4"]
    assert ids("exact", "Smith") == ["s1"]
    assert ids("exact", "smith") == []
    assert ids("exact", "José") == ["s6"]
    assert ids("exact", "Jose") == []


def test_reference_values(store: Store) -> None:
    store.put("Observation", "r1", reference=[ref("subject", "Patient/p1")])
    store.put("Observation", "r2", reference=[ref("subject", "Group/p1")])
    store.put("Observation", "r3", reference=[ref("subject", url="http://other/fhir/Patient/9")])
    store.put("Observation", "r4", reference=[ref("subject", "Patient/p2")])

    def ids(*values: ReferenceValue) -> list[str]:
        return sorted(store.ids("Observation", ReferenceClause("subject", values)))

    assert ids(ReferenceValue("Patient", "p1")) == ["r1"]
    assert ids(ReferenceValue(None, "p1")) == ["r1", "r2"]
    assert ids(ReferenceValue(url="http://other/fhir/Patient/9")) == ["r3"]
    assert ids(ReferenceValue("Patient", "p1"), ReferenceValue("Patient", "p2")) == ["r1", "r4"]
    assert ids(ReferenceValue("Patient", "9")) == []


def test_grouped_count_per_reference_target(store: Store) -> None:
    """``count_by``: the matches counted per target of one reference parameter, in one
    statement; a resource naming a target twice counts once, deleted and non-matching ones not
    at all, other targets' types only when asked."""
    active = tok("status", "", "active")
    store.put("ServiceRequest", "o1", token=[active],
              reference=[ref("performer", "HealthcareService/a"),
                         ref("performer", "Organization/x")])
    store.put("ServiceRequest", "o2", token=[active],
              reference=[ref("performer", "HealthcareService/a"),
                         ref("performer", "HealthcareService/a")])
    store.put("ServiceRequest", "o3", token=[active],
              reference=[ref("performer", "HealthcareService/b"),
                         ref("requester", "HealthcareService/c")])
    store.put("ServiceRequest", "o4", token=[tok("status", "", "revoked")],
              reference=[ref("performer", "HealthcareService/b")])
    store.put("ServiceRequest", "o5", token=[active],
              reference=[ref("performer", "HealthcareService/b")])
    store.delete("ServiceRequest", "o5")
    store.put("ServiceRequest", "o6", token=[active],
              reference=[ref("performer", url="http://other/fhir/HealthcareService/a")])
    criteria = Criteria("ServiceRequest", (), (TokenClause("status", ((None, "active"),)),))
    with store.repo.reader() as reader:
        assert reader.count_by(criteria, "performer", "HealthcareService") == {
            "HealthcareService/a": 2,
            "HealthcareService/b": 1,
        }
        assert reader.count_by(criteria, "performer") == {
            "HealthcareService/a": 2,
            "HealthcareService/b": 1,
            "Organization/x": 1,
        }
        only_a = Criteria(
            "ServiceRequest",
            (),
            (
                TokenClause("status", ((None, "active"),)),
                ReferenceClause("performer", (ReferenceValue("HealthcareService", "a"),)),
            ),
        )
        assert reader.count_by(only_a, "performer", "HealthcareService") == {
            "HealthcareService/a": 2
        }
        nothing = Criteria("ServiceRequest", (), (TokenClause("status", ((None, "draft"),)),))
        assert reader.count_by(nothing, "performer") == {}


def test_a_type_stamp_changes_with_every_write_of_the_type(store: Store) -> None:
    """``stamp``: the same while nothing of the type is written (other types' writes
    included); a create, an update and a delete of the type each give a new one; none inside
    a write unit (its writes may yet be rolled back)."""

    def stamp() -> Any:
        with store.repo.reader() as reader:
            return reader.stamp("HealthcareService")

    empty = stamp()
    assert empty is not None and stamp() == empty
    store.put("HealthcareService", "a")
    created = stamp()
    store.put("Organization", "o")  # another type
    assert stamp() == created
    store.put("HealthcareService", "a", token=[tok("active", "", "true")])
    updated = stamp()
    store.delete("HealthcareService", "a")
    deleted = stamp()
    store.put("HealthcareService", "b")
    assert len({empty, created, updated, deleted, stamp()}) == 5
    assert store.write(lambda unit: unit.stamp("HealthcareService")) is None


@pytest.mark.parametrize(
    ("prefix", "low", "high", "expected"),
    [
        ("eq", 100, 200, ["d1", "d2", "d7"]),
        ("ne", 100, 200, ["d3", "d4", "d6"]),
        ("gt", 100, 200, ["d3", "d4", "d7"]),
        ("lt", 100, 200, ["d4", "d6"]),
        ("ge", 100, 200, ["d1", "d2", "d3", "d4", "d7"]),
        ("le", 100, 200, ["d1", "d2", "d4", "d6", "d7"]),
        ("sa", 100, 200, ["d3", "d7"]),
        ("eb", 100, 200, ["d6"]),
        ("ap", 140, 170, ["d1", "d2", "d4", "d7"]),
    ],
)
def test_date_prefixes(
    store: Store, prefix: Prefix, low: int, high: int, expected: list[str]
) -> None:
    for id, ranges in {
        "d1": [(100, 200)],
        "d2": [(150, 160)],
        "d3": [(300, 400)],
        "d4": [(50, 500)],
        "d5": [],
        "d6": [(10, 20)],
        "d7": [(100, 200), (300, 400)],
    }.items():
        store.put("Observation", id, date=[("date", 0, lo, hi) for lo, hi in ranges])
    got = store.ids("Observation", DateClause("date", ((prefix, low, high),)))
    assert sorted(got) == expected


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("eq", ["n1", "n2"]),
        ("ne", ["n3", "n4"]),
        ("gt", ["n3", "n4"]),
        ("sa", ["n3", "n4"]),
        ("lt", ["n2", "n4"]),
        ("eb", ["n2", "n4"]),
        ("ge", ["n1", "n3", "n4"]),
        ("le", ["n1", "n2", "n4"]),
        ("ap", ["n1", "n2", "n4"]),
    ],
)
def test_number_prefixes(store: Store, prefix: Prefix, expected: list[str]) -> None:
    for id, rows in {
        "n1": [(100.0, 100.0)],
        "n2": [(99.7, 99.7)],
        "n3": [(150.0, 150.0)],
        "n4": [(90.0, 110.0)],
        "n5": [],
    }.items():
        store.put("RiskAssessment", id, number=[("probability", 0, lo, hi) for lo, hi in rows])
    got = store.ids("RiskAssessment", NumberClause("probability", (num(100, prefix),)))
    assert sorted(got) == expected


def test_whole_numbers_among_floats_are_stored(store: Store) -> None:
    store.put(
        "RiskAssessment", "mixed", number=[("probability", 0, 2, 2), ("probability", 0, 0.9, 1.1)]
    )
    for value in (2.0, 1.0):
        assert store.ids("RiskAssessment", NumberClause("probability", (num(value),))) == ["mixed"]


def test_quantity_units_and_prefixes(store: Store) -> None:
    def q(system: str, code: str, unit: str, value: float) -> tuple[Any, ...]:
        return ("value-quantity", 0, system, code, unit, value, value)

    store.put("Observation", "q1", quantity=[q(UCUM, "mg", "milligram", 5.0)])
    store.put("Observation", "q2", quantity=[q("", "", "mg", 5.0)])
    store.put("Observation", "q3", quantity=[q(UCUM, "g", "g", 5.0)])
    store.put("Observation", "q4", quantity=[q(UCUM, "mg", "mg", 10.0)])

    def ids(*values: QuantityValue) -> list[str]:
        return sorted(store.ids("Observation", QuantityClause("value-quantity", values)))

    assert ids(QuantityValue(num(5), UCUM, "mg")) == ["q1"]
    assert ids(QuantityValue(num(5), None, "mg")) == ["q1", "q2"]  # code or unit text
    assert ids(QuantityValue(num(5), None, None)) == ["q1", "q2", "q3"]
    assert ids(QuantityValue(num(5, "gt"), None, "mg")) == ["q4"]
    assert ids(QuantityValue(num(5, "ne"), UCUM, "mg")) == ["q4"]
    assert ids(QuantityValue(num(5), UCUM, "g"), QuantityValue(num(10), UCUM, "mg")) == [
        "q3",
        "q4",
    ]


def test_uri_modes(store: Store) -> None:
    for id, uri in {
        "u1": "http://acme.org/fhir/ValueSet/123",
        "u2": "http://acme.org/fhir",
        "u3": "http://acme.org/fhir/",
        "u4": "http://other.org",
        "u5": "http://acme.org/fhirx",
    }.items():
        store.put("ValueSet", id, uri=[("url", 0, uri)])

    def ids(mode: Any, value: str) -> list[str]:
        return sorted(store.ids("ValueSet", UriClause("url", mode, (value,))))

    assert ids("eq", "http://acme.org/fhir/ValueSet/123") == ["u1"]
    assert ids("eq", "http://acme.org/fhir/ValueSet") == []
    assert ids("below", "http://acme.org/fhir") == ["u1", "u2", "u3", "u5"]
    assert ids("below", "http://acme.org/fhir/") == ["u1", "u3"]
    assert ids("above", "http://acme.org/fhir/ValueSet/123") == ["u1", "u2"]
    assert ids("above", "http://acme.org/fhir/ValueSet") == ["u2"]
    assert ids("above", "http://acme.org/fhir/") == ["u2", "u3"]


def test_missing(store: Store) -> None:
    store.put("Observation", "with", date=[("date", 0, 1, 2)])
    store.put("Observation", "other", date=[("issued", 0, 1, 2)])
    store.put("Observation", "none")
    assert sorted(store.ids("Observation", MissingClause("date", "search_date", True))) == [
        "none",
        "other",
    ]
    assert store.ids("Observation", MissingClause("date", "search_date", False)) == ["with"]
    # a parameter without an index table of its own: rows of any table count
    store.put("Observation", "tokened", token=[tok("date", "", "x")])
    assert sorted(store.ids("Observation", MissingClause("date", "", True))) == ["none", "other"]
    assert sorted(store.ids("Observation", MissingClause("date", "", False))) == ["tokened", "with"]


def test_id_and_last_updated(store: Store) -> None:
    a = store.put("Patient", "a")
    b = store.put("Patient", "b")
    c = store.put("Patient", "c")
    assert a.last_updated < b.last_updated < c.last_updated
    assert sorted(store.ids("Patient", IdClause(("a", "c", "zz")))) == ["a", "c"]
    at_b = (b.last_updated, b.last_updated + 1)
    for clause in (
        LastUpdatedClause((("eq", *at_b),)),
        DateClause("_lastUpdated", (("eq", *at_b),)),
    ):
        assert store.ids("Patient", clause) == ["b"]
    expectations: dict[Prefix, list[str]] = {
        "ne": ["a", "c"],
        "gt": ["c"],
        "sa": ["c"],
        "ge": ["b", "c"],
        "lt": ["a"],
        "eb": ["a"],
        "le": ["a", "b"],
        "ap": ["b"],
    }
    for prefix, expected in expectations.items():
        clause = LastUpdatedClause(((prefix, *at_b),))
        assert store.ids("Patient", clause) == expected, prefix
        legacy = DateClause("_lastUpdated", ((prefix, *at_b),))
        assert store.ids("Patient", legacy) == expected, prefix


def test_deleted_and_updated_resources(store: Store) -> None:
    store.put("Patient", "p", token=[tok("identifier", "A", "old")])
    assert store.index_rows("Patient", "p") == 1
    store.put("Patient", "p", token=[tok("identifier", "A", "new")], string=[("name", 0, "x", "X")])
    assert store.ids("Patient", TokenClause("identifier", ((None, "old"),))) == []
    assert store.ids("Patient", TokenClause("identifier", ((None, "new"),))) == ["p"]
    assert store.index_rows("Patient", "p") == 2
    store.delete("Patient", "p")
    assert store.ids("Patient", TokenClause("identifier", ((None, "new"),))) == []
    assert store.ids("Patient") == []
    assert store.index_rows("Patient", "p") == 0
    # created again: indexed again
    store.put("Patient", "p", token=[tok("identifier", "A", "again")])
    assert store.ids("Patient", TokenClause("identifier", ((None, "again"),))) == ["p"]


def test_patch_and_transaction_writes_are_indexed(store: Store) -> None:
    def transaction(unit: Unit) -> None:
        unit.update("Patient", "a", {"idx": {"token": [tok("identifier", "", "1")]}})
        unit.update("Patient", "b", {"idx": {"token": [tok("identifier", "", "1")]}})
        unit.update("Patient", "a", {"idx": {"token": [tok("identifier", "", "2")]}})

    store.write(transaction)
    assert store.ids("Patient", TokenClause("identifier", ((None, "1"),))) == ["b"]
    assert store.ids("Patient", TokenClause("identifier", ((None, "2"),))) == ["a"]

    def patch(unit: Unit) -> None:  # a patch's new version, as the write pipeline stores it
        current = unit.read("Patient", "b")
        assert current is not None and current.body is not None
        body = {**orjson.loads(current.body), "idx": {"token": [tok("identifier", "", "3")]}}
        unit.update("Patient", "b", body, UpdateMode("PATCH"))

    store.write(patch)
    assert store.ids("Patient", TokenClause("identifier", ((None, "1"),))) == []
    assert store.ids("Patient", TokenClause("identifier", ((None, "3"),))) == ["b"]


def test_rows_written_by_a_batch_job_are_searchable(store: Store) -> None:
    store.put("Patient", "p")
    with store.repo.sql_dialect.writing() as conn:
        write_index(
            conn,
            "Patient",
            "p",
            IndexRows(token=[tok("identifier", "", "7")], date=[("birthdate", 0, 1, 2)]),
        )
    assert store.ids("Patient", TokenClause("identifier", ((None, "7"),))) == ["p"]
    assert store.ids("Patient", DateClause("birthdate", (("eq", 0, 3),))) == ["p"]


def test_conditional_interactions_match_on_index_rows(store: Store) -> None:
    body = {"resourceType": "Patient", "idx": {"token": [tok("identifier", "S", "7")]}}
    criteria = Criteria(
        "Patient", (("identifier", "S|7"),), (TokenClause("identifier", (("S", "7"),)),)
    )

    def conditional_create(unit: Unit) -> WriteResult:
        matches = unit.match(criteria)
        if matches:
            return WriteResult(matches[0], created=False, changed=False)
        return unit.create("Patient", body)

    def conditional_delete(unit: Unit) -> list[WriteResult]:
        return [unit.delete(m.type, m.id) for m in unit.match(criteria)]

    first = store.write(conditional_create)
    again = store.write(conditional_create)
    assert first.created and not again.created
    assert again.version.id == first.version.id
    deleted = store.write(conditional_delete)
    assert [r.version.deleted for r in deleted] == [True]
    assert store.ids("Patient", TokenClause("identifier", (("S", "7"),))) == []


def test_chains(store: Store) -> None:
    store.put("Organization", "x1", string=[("name", 0, "acme", "Acme")])
    store.put(
        "Patient",
        "pa",
        string=[("name", 0, "alpha", "Alpha")],
        reference=[ref("organization", "Organization/x1")],
    )
    store.put("Patient", "pb", string=[("name", 0, "beta", "Beta")])
    store.put("Patient", "pc", string=[("name", 0, "alpha", "Alpha")])
    store.delete("Patient", "pc")
    store.put("Group", "g1", string=[("name", 0, "alpha", "Alpha")])
    store.put("Observation", "o1", reference=[ref("subject", "Patient/pa")])
    store.put("Observation", "o2", reference=[ref("subject", "Patient/pb")])
    store.put("Observation", "o3", reference=[ref("subject", "Patient/pc")])
    store.put("Observation", "o4", reference=[ref("subject", "Group/g1")])
    alpha = StringClause("name", "start", ("alpha",))
    assert store.ids("Observation", ChainClause("subject", ("Patient",), alpha)) == ["o1"]
    both = ChainClause("subject", ("Patient", "Group"), alpha)
    assert sorted(store.ids("Observation", both)) == ["o1", "o4"]
    assert store.ids("Observation", ChainClause("subject", (), alpha)) == []
    deep = ChainClause(
        "subject",
        ("Patient",),
        ChainClause("organization", ("Organization",), StringClause("name", "start", ("ac",))),
    )
    assert store.ids("Observation", deep) == ["o1"]
    by_id = ChainClause("subject", ("Patient",), IdClause(("pb",)))
    assert store.ids("Observation", by_id) == ["o2"]


def test_has(store: Store) -> None:
    store.put("Organization", "x1")
    store.put("Organization", "x2")
    store.put("Patient", "pa", reference=[ref("organization", "Organization/x1")])
    store.put("Patient", "pb", reference=[ref("organization", "Organization/x2")])
    store.put("Patient", "pc")
    code_x = [tok("code", "L", "x")]
    store.put("Observation", "o1", reference=[ref("subject", "Patient/pa")], token=code_x)
    store.put("Observation", "o2", reference=[ref("subject", "Patient/pb")], token=code_x)
    store.delete("Observation", "o2")
    store.put(
        "Observation", "o3", reference=[ref("subject", "Patient/pc")], token=[tok("code", "L", "y")]
    )
    has_x = HasClause("Observation", "subject", TokenClause("code", ((None, "x"),)))
    assert store.ids("Patient", has_x) == ["pa"]
    nested = HasClause("Patient", "organization", has_x)
    assert store.ids("Organization", nested) == ["x1"]
    any_obs = HasClause("Observation", "subject", MissingClause("code", "search_token", False))
    assert sorted(store.ids("Patient", any_obs)) == ["pa", "pc"]


def test_composite_components_share_a_group(store: Store) -> None:
    def pair(code: str, value: float, grp: int) -> dict[str, list[tuple[Any, ...]]]:
        return {
            "token": [tok("code-value#0", "L", code, grp)],
            "quantity": [("code-value#1", grp, UCUM, "mg", "mg", value, value)],
        }

    c1a, c1b = pair("a", 5, 1), pair("b", 10, 2)
    store.put(
        "Observation",
        "c1",
        token=c1a["token"] + c1b["token"],
        quantity=c1a["quantity"] + c1b["quantity"],
    )
    store.put("Observation", "c2", **pair("a", 10, 1))

    def composite(code: str, value: float, prefix: Prefix = "eq") -> tuple[Clause, ...]:
        return (
            TokenClause("code-value#0", (("L", code),)),
            QuantityClause("code-value#1", (QuantityValue(num(value, prefix), None, None),)),
        )

    def ids(*alternatives: tuple[Clause, ...]) -> list[str]:
        return sorted(store.ids("Observation", CompositeClause("code-value", alternatives)))

    assert ids(composite("a", 5)) == ["c1"]
    assert ids(composite("a", 10)) == ["c2"]  # c1 has a and 10, but not in one group
    assert ids(composite("b", 10)) == ["c1"]
    assert ids(composite("b", 5), composite("a", 10)) == ["c2"]
    assert ids(composite("b", 5)) == []
    assert ids(composite("a", 7, "gt")) == ["c2"]
    assert ids(composite("a", 5, "ne")) == ["c2"]  # c1's a-group holds 5
    assert ids(composite("b", 5, "ne")) == ["c1"]
    # a negated first component: the group's code is not b
    not_b: tuple[Clause, ...] = (
        TokenClause("code-value#0", (("L", "b"),), negate=True),
        QuantityClause("code-value#1", (QuantityValue(num(10), None, None),)),
    )
    assert ids(not_b) == ["c2"]
    # components given by their parameter codes are read by position
    by_position: tuple[Clause, ...] = (
        TokenClause("code", (("L", "a"),)),
        QuantityClause("value", (QuantityValue(num(5), None, None),)),
    )
    assert ids(by_position) == ["c1"]


def test_system_search_compartment_and_per_type(store: Store) -> None:
    store.put("Patient", "pa", token=[tok("code", "L", "x")])
    store.put(
        "Observation", "o1", reference=[ref("subject", "Patient/pa")], token=[tok("code", "L", "x")]
    )
    store.put(
        "Observation",
        "o2",
        reference=[ref("performer", "Patient/pa")],
        token=[tok("code", "L", "y")],
    )
    store.put("Observation", "o3", reference=[ref("focus", "Patient/pa")])
    store.put("Encounter", "e1", reference=[ref("subject", "Patient/pa")])
    code_x = TokenClause("code", ((None, "x"),))
    assert store.ids(None, code_x) == ["pa", "o1"]
    assert store.ids(None, code_x, types=("Observation",)) == ["o1"]
    assert store.ids(None, types=("Encounter", "Patient")) == ["pa", "e1"]
    compartment = CompartmentClause(
        "Patient",
        "pa",
        (("Observation", ("subject", "performer")), ("Encounter", ("subject",))),
    )
    assert store.ids("Observation", compartment) == ["o1", "o2"]
    assert store.ids(None, compartment) == ["o1", "o2", "e1"]
    with_self = CompartmentClause("Patient", "pa", compartment.params, include_self=True)
    assert store.ids(None, with_self) == ["pa", "o1", "o2", "e1"]
    per_type = PerTypeClause("Observation", code_x)
    assert store.ids(None, per_type, types=("Patient", "Observation", "Encounter")) == [
        "pa",
        "o1",
        "e1",
    ]


# -- sorting and paging ------------------------------------------------------------------------


def _sorted_ids(store: Store, *keys: SortKey, clauses: tuple[Clause, ...] = ()) -> list[str]:
    criteria = Criteria("Patient", (), clauses)
    return [v.id for v in store.page(SearchQuery(criteria, 100, keys)).items]


def test_sort_uses_smallest_ascending_largest_descending_missing_last(store: Store) -> None:
    store.put("Patient", "b", string=[("name", 0, "b", "B")], date=[("birthdate", 0, 20, 30)])
    store.put("Patient", "none1")
    store.put("Patient", "az", string=[("name", 0, "a", "A"), ("name", 0, "z", "Z")])
    store.put("Patient", "c", string=[("name", 0, "c", "C")], date=[("birthdate", 0, 10, 40)])
    store.put("Patient", "a", string=[("name", 0, "a", "A")], date=[("birthdate", 0, 15, 16)])
    store.put("Patient", "none2")
    name = "search_string"
    assert _sorted_ids(store, SortKey("name", name, False)) == [
        "az",
        "a",
        "b",
        "c",
        "none1",
        "none2",
    ]
    assert _sorted_ids(store, SortKey("name", name, True)) == [
        "az",
        "c",
        "b",
        "a",
        "none1",
        "none2",
    ]
    date = "search_date"
    assert _sorted_ids(store, SortKey("birthdate", date, False)) == [
        "c",
        "a",
        "b",
        "none1",
        "az",
        "none2",
    ]
    assert _sorted_ids(store, SortKey("birthdate", date, True)) == [
        "c",
        "b",
        "a",
        "none1",
        "az",
        "none2",
    ]
    assert _sorted_ids(store, SortKey("_id", None, False)) == [
        "a",
        "az",
        "b",
        "c",
        "none1",
        "none2",
    ]
    assert _sorted_ids(store, SortKey("_id", None, True)) == ["none2", "none1", "c", "b", "az", "a"]
    assert _sorted_ids(store, SortKey("_lastUpdated", None, True))[0] == "none2"
    # two keys: date descending, then name ascending for the ones without a date
    two = _sorted_ids(store, SortKey("birthdate", date, True), SortKey("name", name, False))
    assert two == ["c", "b", "a", "az", "none1", "none2"]


def test_sort_by_token_reference_number_quantity_uri(store: Store) -> None:
    store.put(
        "Observation",
        "o1",
        token=[tok("code", "L", "m")],
        reference=[ref("subject", "Patient/b")],
        number=[("n", 0, 3.0, 3.0)],
        quantity=[("q", 0, UCUM, "mg", "mg", 1.0, 9.0)],
        uri=[("u", 0, "urn:b")],
    )
    store.put(
        "Observation",
        "o2",
        token=[tok("code", "L", "k")],
        reference=[ref("subject", "Patient/a")],
        number=[("n", 0, 1.0, 5.0)],
        quantity=[("q", 0, UCUM, "mg", "mg", 2.0, 3.0)],
        uri=[("u", 0, "urn:a")],
    )
    store.put("Observation", "o3")

    def ids(param: str, table: str, descending: bool) -> list[str]:
        key = SortKey(param, table, descending)
        return [
            v.id for v in store.page(SearchQuery(Criteria("Observation", (), ()), 10, (key,))).items
        ]

    assert ids("code", "search_token", False) == ["o2", "o1", "o3"]
    assert ids("subject", "search_reference", False) == ["o2", "o1", "o3"]
    assert ids("subject", "search_reference", True) == ["o1", "o2", "o3"]
    assert ids("n", "search_number", False) == ["o2", "o1", "o3"]
    assert ids("n", "search_number", True) == ["o2", "o1", "o3"]  # highs: 5 then 3
    assert ids("q", "search_quantity", False) == ["o1", "o2", "o3"]
    assert ids("q", "search_quantity", True) == ["o1", "o2", "o3"]
    assert ids("u", "search_uri", True) == ["o1", "o2", "o3"]


def _walk(store: Store, query: SearchQuery) -> list[SearchPage]:
    pages = [store.page(query)]
    while pages[-1].next is not None:
        assert len(pages) < 50
        pages.append(
            store.page(SearchQuery(query.criteria, query.count, query.sort, pages[-1].next))
        )
    return pages


@pytest.mark.parametrize("descending", [False, True])
def test_keyset_paging_forward_and_backward_with_ties(store: Store, descending: bool) -> None:
    names = ["m", "a", None, "m", "m", "b", None, "a", "z", "m"]
    for n, name in enumerate(names):
        rows = [("name", 0, name, name.upper())] if name else []
        store.put("Patient", f"p{n}", string=rows)
    sort = (SortKey("name", "search_string", descending),)
    criteria = Criteria("Patient", (), ())
    everything = [v.id for v in store.page(SearchQuery(criteria, 100, sort)).items]
    assert len(everything) == len(names)
    pages = _walk(store, SearchQuery(criteria, 3, sort))
    assert [v.id for p in pages for v in p.items] == everything
    assert [len(p.items) for p in pages] == [3, 3, 3, 1]
    assert pages[0].previous is None
    assert all(p.previous is not None for p in pages[1:])
    # backward from the last page gives the same pages
    back = [pages[-1]]
    while back[-1].previous is not None:
        back.append(store.page(SearchQuery(criteria, 3, sort, back[-1].previous)))
    assert [[v.id for v in p.items] for p in reversed(back)] == [
        [v.id for v in p.items] for p in pages
    ]
    # a backward page's next cursor leads forward again
    again = store.page(SearchQuery(criteria, 3, sort, back[1].next))
    assert [v.id for v in again.items] == [v.id for v in pages[-1].items]


def test_paging_in_insertion_order_and_during_updates(store: Store) -> None:
    for n in range(7):
        store.put("Patient", f"p{n}", string=[("name", 0, "same", "Same")])
    sort = (SortKey("name", "search_string", False),)
    for keys in ((), sort):
        criteria = Criteria("Patient", (), ())
        first = store.page(SearchQuery(criteria, 3, keys))
        assert [v.id for v in first.items] == ["p0", "p1", "p2"]
        # updates of seen and unseen resources (same sort values) move nothing
        store.put("Patient", "p1", string=[("name", 0, "same", "Same")])
        store.put("Patient", "p5", string=[("name", 0, "same", "Same")])
        seen = [v.id for v in first.items]
        cursor = first.next
        while cursor is not None:
            page = store.page(SearchQuery(criteria, 3, keys, cursor))
            seen.extend(v.id for v in page.items)
            cursor = page.next
        assert seen == [f"p{n}" for n in range(7)]


def test_a_page_emptied_by_deletes_still_leads_both_ways(store: Store) -> None:
    for n in range(4):
        store.put("Patient", f"p{n}")
    criteria = Criteria("Patient", (), ())
    first = store.page(SearchQuery(criteria, 2))
    store.delete("Patient", "p2")
    store.delete("Patient", "p3")
    empty = store.page(SearchQuery(criteria, 2, cursor=first.next))
    assert empty.items == [] and empty.next is None and empty.previous is not None
    back = store.page(SearchQuery(criteria, 2, cursor=empty.previous))
    assert [v.id for v in back.items] == ["p0", "p1"]
    # and backward: the page before the second one, once emptied, leads forward to it
    for n in range(4):
        store.put("Group", f"g{n}")
    groups = Criteria("Group", (), ())
    second = store.page(SearchQuery(groups, 2, cursor=store.page(SearchQuery(groups, 2)).next))
    store.delete("Group", "g0")
    store.delete("Group", "g1")
    emptied = store.page(SearchQuery(groups, 2, cursor=second.previous))
    assert emptied.items == [] and emptied.previous is None and emptied.next is not None
    again = store.page(SearchQuery(groups, 2, cursor=emptied.next))
    assert [v.id for v in again.items] == ["g2", "g3"]


def test_cursor_of_another_sort_is_refused(store: Store) -> None:
    store.put("Patient", "a")
    criteria = Criteria("Patient", (), ())
    with pytest.raises(InvalidSearch):
        store.page(SearchQuery(criteria, 3, (), Cursor(("x",), 1)))
    with pytest.raises(InvalidSearch):
        store.page(SearchQuery(criteria, 3, (SortKey("_id", None, False),), Cursor((), 1)))


@pytest.mark.parametrize(
    ("total", "count", "expected_total", "expected_items"),
    [
        ("accurate", 2, 3, 2),
        ("estimate", 2, 3, 2),
        ("none", 2, None, 2),
        ("accurate", 0, 3, 0),
        ("none", 0, None, 0),
        ("auto", 2, 3, 2),
        ("bounded", 2, 3, 2),
    ],
)
def test_totals(
    store: Store, total: Total, count: int, expected_total: int | None, expected_items: int
) -> None:
    for n in range(3):
        store.put("Patient", f"p{n}", token=[tok("identifier", "", "x")])
    store.put("Patient", "other")
    clause = TokenClause("identifier", ((None, "x"),))
    page = store.page(SearchQuery(Criteria("Patient", (), (clause,)), count, total=total))
    if total == "estimate" and store.repo.dialect == "postgresql":
        # the planner's figure from statistics (none taken yet here): a count, not the count
        assert isinstance(page.total, int) and page.total >= 0
    else:
        assert page.total == expected_total
    assert len(page.items) == expected_items
    if count == 0:
        assert page.next is None and page.previous is None


def test_a_cheap_count_is_exact_and_a_broad_one_is_left_to_the_estimate(store: Store) -> None:
    def many(unit: Unit) -> None:
        for n in range(PROBE_LIMIT + 1):
            rows = [tok("identifier", "", "broad")]
            if n < 3:
                rows.append(tok("identifier", "", "few"))
            unit.update("Patient", f"b{n}", {"resourceType": "Patient", "idx": {"token": rows}})
        unit.update("Organization", "o1", {"resourceType": "Organization", "idx": {}})

    store.write(many)
    few = TokenClause("identifier", ((None, "few"),))
    broad = TokenClause("identifier", ((None, "broad"),))
    postgres = store.repo.dialect == "postgresql"

    def total(total: Total, *clauses: Clause, type: str = "Patient") -> int | None:
        return store.page(SearchQuery(Criteria(type, (), clauses), 5, total=total)).total

    for cheap in ("auto", "bounded"):
        assert total(cheap, few) == 3  # a narrow clause drives the count
        assert total(cheap, few, broad) == 3
        assert total(cheap, type="Organization") == 1  # a small type is counted whole
    if postgres:
        with store.repo.sql_dialect.writing() as conn:
            conn.execute("ANALYZE")  # what autovacuum does on a live store
    for wide in ((broad,), ()):
        assert total("accurate", *wide) == PROBE_LIMIT + 1
        assert total("bounded", *wide) is None  # counting would read every match
        estimated = total("auto", *wide)
        if postgres:  # the planner's figure from the statistics
            assert estimated is not None and abs(estimated - PROBE_LIMIT) <= PROBE_LIMIT // 10
        else:  # SQLite keeps no statistics
            assert estimated is None


def test_an_estimate_the_probes_contradict_is_not_given() -> None:
    one = SearchQuery(Criteria("Patient", (), (TokenClause("identifier", ((None, "x"),)),)), 5)
    two = SearchQuery(
        Criteria("Patient", (), (*one.criteria.clauses, TokenClause("gender", ((None, "f"),)))), 5
    )
    whole = SearchQuery(Criteria("Patient", (), ()), 5)
    for query in (one, whole):  # the probe saw PROBE_LIMIT entries or more of this one clause
        assert _contradicted(query, PROBE_LIMIT - 1)
        assert not _contradicted(query, PROBE_LIMIT)
    assert not _contradicted(two, 3)  # two broad clauses may intersect in a few
    assert _contradicted(one, None)


# -- _include and _revinclude ------------------------------------------------------------------


@pytest.fixture
def linked(store: Store) -> dict[str, Version]:
    made = {
        "x1": store.put("Organization", "x1"),
        "pa": store.put("Patient", "pa", reference=[ref("organization", "Organization/x1")]),
        "pb": store.put("Patient", "pb"),
        "dr": store.put("Practitioner", "dr"),
        "gone": store.put("Practitioner", "gone"),
        "o1": store.put(
            "Observation",
            "o1",
            reference=[
                ref("subject", "Patient/pa"),
                ref("performer", "Practitioner/dr"),
                ref("performer", "Practitioner/gone"),
                ref("derived-from", url="http://elsewhere/Observation/1"),
            ],
        ),
        "o2": store.put("Observation", "o2", reference=[ref("subject", "Patient/pa")]),
        "o3": store.put("Observation", "o3", reference=[ref("subject", "Patient/pb")]),
        # a composite component row is not a reference parameter of its own
        "o4": store.put("Observation", "o4", reference=[("comp#0", 1, "Patient", "pb", "")]),
    }
    store.delete("Practitioner", "gone")
    return made


def inc(source: str, param: str, target: str | None = None, *, iterate: bool = False) -> Include:
    return Include(source, param, target, iterate, False)


def rev(source: str, param: str, target: str | None = None, *, iterate: bool = False) -> Include:
    return Include(source, param, target, iterate, True)


def test_include_forward(store: Store, linked: dict[str, Version]) -> None:
    o1, o2, o3 = linked["o1"], linked["o2"], linked["o3"]
    assert store.include([o1, o2], (inc("Observation", "subject"),)) == (["Patient/pa"], False)
    assert store.include([o1, o3], (inc("Observation", "subject"),)) == (
        ["Patient/pa", "Patient/pb"],
        False,
    )
    star = store.include([o1], (inc("Observation", "*"),))
    assert star == (["Patient/pa", "Practitioner/dr"], False)  # the deleted one is left out
    assert store.include([o1], (inc("Observation", "subject", "Group"),)) == ([], False)
    assert store.include([o1], (inc("Observation", "*", "Practitioner"),)) == (
        ["Practitioner/dr"],
        False,
    )
    # the page itself is never included again
    assert store.include([o1, linked["pa"]], (inc("Observation", "subject"),)) == ([], False)
    assert store.include([linked["o4"]], (inc("Observation", "*"),)) == ([], False)


def test_revinclude(store: Store, linked: dict[str, Version]) -> None:
    pa, pb = linked["pa"], linked["pb"]
    assert store.include([pa], (rev("Observation", "subject"),)) == (
        ["Observation/o1", "Observation/o2"],
        False,
    )
    assert store.include([pa, pb], (rev("Observation", "subject", "Patient"),)) == (
        ["Observation/o1", "Observation/o2", "Observation/o3"],
        False,
    )
    assert store.include([pa], (rev("Observation", "subject", "Group"),)) == ([], False)
    assert store.include([pb], (rev("Observation", "*"),)) == (["Observation/o3"], False)


def test_iterate_and_cap(store: Store, linked: dict[str, Version]) -> None:
    o1 = linked["o1"]
    plain = (inc("Observation", "subject"), inc("Patient", "organization"))
    assert store.include([o1], plain) == (["Patient/pa"], False)
    iterate = (inc("Observation", "subject"), inc("Patient", "organization", iterate=True))
    assert store.include([o1], iterate) == (["Patient/pa", "Organization/x1"], False)
    # Organization <- Patient <- Observation, then forward to the performer
    chain = (
        rev("Patient", "organization", iterate=True),
        rev("Observation", "subject", iterate=True),
        inc("Observation", "performer", iterate=True),
    )
    found, truncated = store.include([linked["x1"]], chain)
    assert found == ["Patient/pa", "Observation/o1", "Observation/o2", "Practitioner/dr"]
    assert not truncated
    assert store.include([linked["x1"]], chain, limit=3) == (found[:3], True)
    assert store.include([linked["x1"]], chain, limit=4) == (found, False)
    assert store.include([linked["pa"]], (rev("Observation", "subject"),), limit=1) == (
        ["Observation/o1"],
        True,
    )


# -- upgrading a store -------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    url: str = request.getfixturevalue("fresh_pg_database")
    return url


def test_a_store_of_the_first_schema_keeps_its_identifier_rows(fresh_url: str) -> None:
    from server.store.sql.schema import MIGRATIONS

    dialect = open_dialect(fresh_url, pool_size=1)
    with dialect.writing() as conn:
        conn.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
        )
        for statement in MIGRATIONS[0]:
            conn.execute(statement.format(**dialect.types))
        conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (1, 0)")
        conn.execute(
            "INSERT INTO resource (rtype, id, version, last_updated, deleted, seq, created_seq,"
            " body) VALUES ('Patient', 'old', 1, 1, 0, 1, 1, NULL)"
        )
        conn.execute(
            "INSERT INTO search_token (rtype, id, param, system, code)"
            " VALUES ('Patient', 'old', 'identifier', 'urn:mrn', '42')"
        )
    repo = SqlRepository(dialect, FakeRows())
    repo.migrate()
    store = Store(repo)
    try:
        assert store.ids("Patient", TokenClause("identifier", (("urn:mrn", "42"),))) == ["old"]
        store.put("Patient", "old", token=[tok("identifier", "urn:mrn", "43")])
        assert store.ids("Patient", TokenClause("identifier", ((None, "42"),))) == []
        assert store.ids("Patient", TokenClause("identifier", ((None, "43"),))) == ["old"]
    finally:
        store.close()
