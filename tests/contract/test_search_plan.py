"""Searches are index lookups: PostgreSQL's plans for the compiled SQL of each clause type use
the search tables' indexes, never a sequential scan of them, on a store of 100k resources."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from server.search.query import (
    ChainClause,
    Clause,
    Criteria,
    DateClause,
    ReferenceClause,
    ReferenceValue,
    SearchQuery,
    StringClause,
    TokenClause,
)
from server.store.sql.adapter import SqlRepository
from server.store.sql.dialect import open_dialect
from server.store.sql.query import page_statement
from tests.support import postgres_database

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

N = 50_000
DAY = 86_400_000_000
INDEX_NODES = {"Index Scan", "Index Only Scan", "Bitmap Index Scan"}

SEED = [
    # N patients, N observations, in insertion order
    "INSERT INTO resource (rtype, id, version, last_updated, deleted, seq, created_seq, body)"
    " SELECT 'Patient', 'p' || g, 1, g, 0, g, g, NULL FROM generate_series(1, %(n)s) g",
    "INSERT INTO resource (rtype, id, version, last_updated, deleted, seq, created_seq, body)"
    " SELECT 'Observation', 'o' || g, 1, %(n)s + g, 0, %(n)s + g, %(n)s + g, NULL"
    " FROM generate_series(1, %(n)s) g",
    "INSERT INTO search_token (rtype, id, param, grp, system, code)"
    " SELECT 'Patient', 'p' || g, 'identifier', 0, 'urn:mrn', 'mrn' || g"
    " FROM generate_series(1, %(n)s) g",
    "INSERT INTO search_token (rtype, id, param, grp, system, code)"
    " SELECT 'Observation', 'o' || g, 'code', 0, 'http://loinc.org', 'c' || (g %% 500)"
    " FROM generate_series(1, %(n)s) g",
    "INSERT INTO search_string (rtype, id, param, grp, value, exact)"
    " SELECT 'Patient', 'p' || g, 'name', 0, 'name' || g, 'Name' || g"
    " FROM generate_series(1, %(n)s) g",
    "INSERT INTO search_reference (rtype, id, param, grp, target_type, target_id, url)"
    " SELECT 'Observation', 'o' || g, 'subject', 0, 'Patient', 'p' || (1 + g %% %(n)s), ''"
    " FROM generate_series(1, %(n)s) g",
    "INSERT INTO search_date (rtype, id, param, grp, low, high)"
    " SELECT 'Observation', 'o' || g, 'date', 0, g * %(day)s, (g + 1) * %(day)s"
    " FROM generate_series(1, %(n)s) g",
]


@pytest.fixture(scope="module")
def database(postgres_url: str) -> Iterator[str]:
    with postgres_database(postgres_url) as url:
        repo = SqlRepository(open_dialect(url, pool_size=1))
        repo.migrate()
        repo.close()
        with psycopg.connect(url) as conn:  # one transaction
            for statement in SEED:
                conn.execute(statement, {"n": N, "day": DAY})
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")
        yield url


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def _plan(url: str, type: str, clause: Clause) -> list[dict[str, Any]]:
    query = SearchQuery(Criteria(type, (), (clause,)), 20)
    sql, args, _ = page_statement(query, collate=' COLLATE "C"')
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("EXPLAIN (FORMAT JSON) " + sql.replace("?", "%s"), args).fetchone()
    assert row is not None
    return list(_nodes(row[0][0]["Plan"]))


@pytest.mark.parametrize(
    ("type", "clause", "tables"),
    [
        ("Patient", TokenClause("identifier", (("urn:mrn", "mrn4242"),)), {"search_token"}),
        ("Observation", TokenClause("code", ((None, "c7"),)), {"search_token"}),
        (
            "Observation",
            ReferenceClause("subject", (ReferenceValue("Patient", "p123"),)),
            {"search_reference"},
        ),
        ("Observation", DateClause("date", (("eq", 777 * DAY, 778 * DAY),)), {"search_date"}),
        ("Patient", StringClause("name", "start", ("name4242",)), {"search_string"}),
        ("Patient", StringClause("name", "exact", ("Name4242",)), {"search_string"}),
        (
            "Observation",
            ChainClause("subject", ("Patient",), StringClause("name", "start", ("name4242",))),
            {"search_reference", "search_string"},
        ),
        (
            "Observation",
            ChainClause("subject", ("Patient",), TokenClause("identifier", ((None, "mrn99"),))),
            {"search_reference", "search_token"},
        ),
    ],
    ids=["token", "token-code", "reference", "date", "string", "string-exact", "chain", "chain2"],
)
def test_clause_plans_use_the_search_indexes(
    database: str, type: str, clause: Clause, tables: set[str]
) -> None:
    nodes = _plan(database, type, clause)
    scanned = {
        node["Relation Name"]: node["Node Type"]
        for node in nodes
        if str(node.get("Relation Name", "")).startswith("search_")
    }
    indexed = {
        str(node.get("Index Name", "")).rsplit("_", 1)[0]
        for node in nodes
        if node["Node Type"] in INDEX_NODES
    }
    assert "Seq Scan" not in scanned.values(), scanned
    assert tables <= indexed, (tables, indexed, [n["Node Type"] for n in nodes])
