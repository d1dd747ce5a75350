"""The search plan is chosen per query on both stores (``store/sql/query.py``, decision 0011): a
selective clause drives (the type-order index is not read), a broad search walks the type in
insertion order and stops at the page's end (no sort of its matches), a patient-scoped search
with a broad second clause drives from the patient, and a one-clause ``_total`` is counted off
the index without reading a resource row."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from server.search.query import (
    ChainClause,
    Clause,
    Criteria,
    ReferenceClause,
    ReferenceValue,
    SearchQuery,
    StringClause,
    TokenClause,
)
from server.store.sql.adapter import SqlRepository
from server.store.sql.dialect import open_dialect
from server.store.sql.query import count_statement, page_statement
from tests.support import postgres_database, sqlite_url

pytestmark = pytest.mark.slow

N = 20_000
LOINC = "http://loinc.org"

# N patients, N observations in insertion order; each code on N / 500 observations, every
# observation in the LOINC system and pointing at one patient
SEED = [
    "INSERT INTO resource (rtype, id, version, last_updated, deleted, seq, created_seq, body)"
    " SELECT 'Patient', 'p' || g, 1, g, 0, g, g, NULL FROM series",
    "INSERT INTO resource (rtype, id, version, last_updated, deleted, seq, created_seq, body)"
    " SELECT 'Observation', 'o' || g, 1, {n} + g, 0, {n} + g, {n} + g, NULL FROM series",
    "INSERT INTO search_token (rtype, id, param, grp, system, code)"
    " SELECT 'Observation', 'o' || g, 'code', 0, '" + LOINC + "', 'c' || (g % 500) FROM series",
    "INSERT INTO search_string (rtype, id, param, grp, value, exact)"
    " SELECT 'Patient', 'p' || g, 'name', 0, 'name' || g, 'Name' || g FROM series",
    "INSERT INTO search_reference (rtype, id, param, grp, target_type, target_id, url)"
    " SELECT 'Observation', 'o' || g, 'subject', 0, 'Patient', 'p' || (1 + g % {n}), ''"
    " FROM series",
]


def _sqlite_seed(path: Path) -> str:
    url = sqlite_url(path)
    repo = SqlRepository(open_dialect(url, pool_size=1))
    repo.migrate()
    repo.close()
    with sqlite3.connect(path) as conn:
        series = (
            "WITH RECURSIVE series(g) AS"
            f" (SELECT 1 UNION ALL SELECT g + 1 FROM series WHERE g < {N})"
        )
        for statement in SEED:
            conn.execute(f"{series} {statement.format(n=N)}")
    return url


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        yield _sqlite_seed(tmp_path_factory.mktemp("plans") / "store.db")
        return
    postgres_url: str = request.getfixturevalue("postgres_url")
    with postgres_database(postgres_url) as url:
        repo = SqlRepository(open_dialect(url, pool_size=1))
        repo.migrate()
        repo.close()
        with psycopg.connect(url) as conn:
            for statement in SEED:
                conn.execute(
                    f"WITH series AS (SELECT generate_series(1, {N}) AS g) {statement.format(n=N)}"
                )
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        yield url


def _explain(url: str, clauses: tuple[Clause, ...], count: bool = False) -> tuple[str, str]:
    """(the statement, its plan as text) with the store's own probes."""
    query = SearchQuery(Criteria("Observation", (), clauses), 20)
    if url.startswith("sqlite"):
        conn: Any = sqlite3.connect(url.removeprefix("sqlite:///"))
        collate, mark, explain = "", "?", "EXPLAIN QUERY PLAN "
    else:
        conn = psycopg.connect(url, autocommit=True)
        collate, mark, explain = ' COLLATE "C"', "%s", "EXPLAIN "
    try:

        def probe(sql: str, args: Any) -> int:
            return int(conn.execute(sql.replace("?", mark), args).fetchone()[0])

        if count:
            sql, args = count_statement(query.criteria, collate=collate, probe=probe)
        else:
            sql, args, _ = page_statement(query, collate=collate, probe=probe)
        rows = conn.execute(explain + sql.replace("?", mark), args).fetchall()
        return sql, "\n".join(str(row[-1] if url.startswith("sqlite") else row[0]) for row in rows)
    finally:
        conn.close()


SELECTIVE = TokenClause("code", ((None, "c7"),))
BROAD = TokenClause("code", ((LOINC, None),))
PATIENT = ReferenceClause("subject", (ReferenceValue("Patient", "p5"),))


def test_a_selective_clause_drives(store: str) -> None:
    sql, plan = _explain(store, (SELECTIVE,))
    assert "IN (SELECT d.rtype, d.id" in sql
    assert "resource_type_order" not in plan, plan


def test_a_broad_search_walks_the_type_in_order(store: str) -> None:
    sql, plan = _explain(store, (BROAD,))
    assert "IN (SELECT d.rtype" not in sql
    assert "resource_type_order" in plan, plan
    assert "TEMP B-TREE FOR ORDER BY" not in plan and "Sort" not in plan, plan


def test_a_patient_scoped_search_drives_from_the_patient(store: str) -> None:
    sql, plan = _explain(store, (BROAD, PATIENT))
    assert "search_reference" in sql.split("IN (SELECT d.rtype, d.id FROM (")[1].split(")")[0]
    assert "resource_type_order" not in plan, plan


def test_a_chain_with_a_selective_inner_clause_drives(store: str) -> None:
    chain = ChainClause("subject", ("Patient",), StringClause("name", "exact", ("Name42",)))
    sql, plan = _explain(store, (chain,))
    assert "IN (SELECT d.rtype, d.id" in sql
    assert "resource_type_order" not in plan, plan


def test_a_one_clause_total_reads_only_the_index(store: str) -> None:
    sql, plan = _explain(store, (BROAD,), count=True)
    assert " resource " not in f" {sql} ", sql
    assert "on resource" not in plan and "resource_" not in plan, plan
    if store.startswith("sqlite"):
        assert "COVERING INDEX search_token_lookup" in plan, plan
