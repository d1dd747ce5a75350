"""The one door: every access through AuthorizedRepository is checked against the principal."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.auth.principal import LOCAL, Principal
from server.errors import Forbidden
from server.store.authorized import AuthorizedRepository
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
        from server.store.base import HistoryQuery

        assert reader.history(HistoryQuery(count=10)).items == []
    repo.close()
