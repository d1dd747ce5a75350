"""The one door: every access through AuthorizedRepository is checked against the principal."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from server.auth.interactions import Interaction
from server.auth.policy import EVERYTHING, Access, Facts, where
from server.auth.principal import LOCAL, Principal
from server.errors import Forbidden
from server.ports import SearchPage
from server.search.query import Criteria, SearchQuery, TokenClause, Total
from server.store.authorized import AuthorizedRepository, _Checked
from server.store.runner import Runner
from server.store.sql.adapter import SqlRepository
from server.store.sql.dialect import SQLiteDialect


def _repo(tmp_path: Path) -> SqlRepository:
    repo = SqlRepository(SQLiteDialect(str(tmp_path / "a.db")))
    repo.migrate()
    return repo


def test_local_principal_reads_and_writes(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    runner = Runner(repo, 1)
    door = AuthorizedRepository(runner, LOCAL)

    async def scenario() -> None:
        created = await door.writing(lambda u: u.create("Patient", {"resourceType": "Patient"}))
        assert created.version is not None
        found = await door.reading(lambda r: r.read("Patient", created.version.id))  # type: ignore[union-attr]
        assert found is not None and found.version == 1

    asyncio.run(scenario())
    runner.close()
    repo.close()


def test_a_principal_without_permission_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    runner = Runner(repo, 1)
    door = AuthorizedRepository(runner, Principal("nobody"))

    async def scenario() -> None:
        with pytest.raises(Forbidden):
            await door.writing(lambda u: u.create("Patient", {"resourceType": "Patient"}))
        with pytest.raises(Forbidden):
            await door.reading(lambda r: r.read("Patient", "x"))

    asyncio.run(scenario())
    runner.close()
    with repo.reader() as reader:
        from server.ports import HistoryQuery

        assert reader.history(HistoryQuery(count=10)).items == []
    repo.close()


class _Recording:
    """A reader that keeps the queries it is asked."""

    def __init__(self) -> None:
        self.queries: list[SearchQuery] = []

    def search(self, query: SearchQuery) -> SearchPage:
        self.queries.append(query)
        return SearchPage([], None, None, None)

    def count_by(
        self, criteria: Criteria, param: str, target_type: str | None = None
    ) -> dict[str, int]:
        self.queries.append(SearchQuery(criteria, 0))
        return {}

    def stamp(self, type: str) -> tuple[Any, ...] | None:
        return ("store", 1, 2)


class _SeesEverything:
    """A policy granting every interaction on every type: the caller is still restricted (not
    ``allow_all``), so the door treats its view as narrowed."""

    def narrowing(self, principal: Principal, interaction: Interaction, type: str | None) -> Any:
        return EVERYTHING

    def admits(self, principal: Principal, interaction: Interaction, facts: Facts) -> bool:
        return True


@pytest.mark.parametrize(
    ("asked", "unrestricted", "restricted"),
    [
        ("estimate", "estimate", "accurate"),
        ("auto", "auto", "bounded"),  # no estimate beyond the cheap count: no total
        ("accurate", "accurate", "accurate"),
        ("bounded", "bounded", "bounded"),
        ("none", "none", "none"),
    ],
)
def test_only_a_caller_who_sees_every_row_is_given_an_estimate(
    asked: Total, unrestricted: Total, restricted: Total
) -> None:
    query = SearchQuery(Criteria("Patient", (), ()), 20, total=asked)
    for principal, expected in ((LOCAL, unrestricted), (Principal("partner"), restricted)):
        inner = _Recording()
        access = Access(principal, [_SeesEverything()])
        _Checked(inner, access).search(query)  # type: ignore[arg-type]
        assert [q.total for q in inner.queries] == [expected]


class _Narrows:
    """A policy narrowing a restricted caller's searches to one clause."""

    def __init__(self, clause: Any) -> None:
        self.clause = clause

    def narrowing(self, principal: Principal, interaction: Interaction, type: str | None) -> Any:
        return where(self.clause)

    def admits(self, principal: Principal, interaction: Interaction, facts: Facts) -> bool:
        return True


def test_a_grouped_count_counts_only_what_the_caller_may_see() -> None:
    mine = TokenClause("status", ((None, "active"),))
    criteria = Criteria("ServiceRequest", (), ())
    for principal, expected in ((LOCAL, ()), (Principal("partner"), (mine,))):
        inner = _Recording()
        access = Access(principal, [_Narrows(mine)])
        _Checked(inner, access).count_by(criteria, "performer")  # type: ignore[arg-type]
        assert [q.criteria.clauses for q in inner.queries] == [expected]


def test_a_type_stamp_only_for_a_caller_who_may_search_all_of_the_type() -> None:
    """A stamp vouches for what a search of the whole type finds: given (with whether the
    caller is unrestricted) when the caller's narrowing adds no clause, none when it narrows
    per resource, refused like the search when the caller may not search the type."""
    mine = TokenClause("status", ((None, "active"),))
    assert _Checked(_Recording(), Access(LOCAL, [_Narrows(mine)])).stamp(  # type: ignore[arg-type]
        "HealthcareService"
    ) == ("store", 1, 2, True)
    seeing = Access(Principal("partner"), [_SeesEverything()])
    assert _Checked(_Recording(), seeing).stamp("HealthcareService") == (  # type: ignore[arg-type]
        "store", 1, 2, False
    )
    narrowed = Access(Principal("partner"), [_Narrows(mine)])
    assert _Checked(_Recording(), narrowed).stamp("HealthcareService") is None  # type: ignore[arg-type]
    with pytest.raises(Forbidden):
        _Checked(_Recording(), Access(Principal("partner"), [])).stamp(  # type: ignore[arg-type]
            "HealthcareService"
        )
