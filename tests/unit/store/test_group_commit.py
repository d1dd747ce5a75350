"""Group commit: writes queued together share one commit, yet each stays atomic on its own."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from server.errors import PreconditionFailed, ServiceUnavailable
from server.ports import HistoryQuery, Unit
from server.store.runner import Runner
from server.store.sql.adapter import SqlRepository
from server.store.sql.dialect import SQLiteDialect


@pytest.fixture
def repo(tmp_path: Path) -> Any:
    repo = SqlRepository(SQLiteDialect(str(tmp_path / "g.db")))
    repo.migrate()
    yield repo
    repo.close()


def _create(family: str) -> Any:
    def job(unit: Unit) -> str:
        result = unit.create("Patient", {"resourceType": "Patient", "name": [{"family": family}]})
        assert result.version is not None
        return result.version.id

    return job


def _write_then_fail(unit: Unit) -> None:
    unit.create("Patient", {"resourceType": "Patient", "name": [{"family": "Lost"}]})
    raise PreconditionFailed("stale")


def test_a_failing_job_rolls_back_alone(repo: SqlRepository) -> None:
    runner = Runner(repo, 1)

    async def scenario() -> list[Any]:
        jobs = [
            runner.write(_create("A")),
            runner.write(_write_then_fail),
            runner.write(_create("B")),
        ]
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(scenario())
    runner.close()
    assert isinstance(results[1], PreconditionFailed)
    with repo.reader() as reader:
        items = reader.history(HistoryQuery("Patient", count=10)).items
    bodies = [v.body.decode() for v in items if v.body]
    assert len(items) == 2
    assert not any("Lost" in body for body in bodies)


def test_concurrent_writes_through_the_runner_are_all_durable(repo: SqlRepository) -> None:
    runner = Runner(repo, 1)

    async def scenario() -> list[Any]:
        jobs = [runner.write(_create(f"P{i}")) for i in range(40)]
        jobs.append(runner.write(_write_then_fail))
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(scenario())
    runner.close()
    assert isinstance(results[-1], PreconditionFailed)
    ids = results[:-1]
    assert len(set(ids)) == 40
    with repo.reader() as reader:
        for id in ids:
            found = reader.read("Patient", id)
            assert found is not None and found.version == 1
        assert len(reader.history(HistoryQuery("Patient", count=100)).items) == 40


def test_stamps_increase_strictly_in_commit_order(repo: SqlRepository) -> None:
    runner = Runner(repo, 1)

    async def scenario() -> None:
        for _ in range(3):  # several groups, each of several writes
            await asyncio.gather(*[runner.write(_create(f"S{i}")) for i in range(20)])

    asyncio.run(scenario())
    runner.close()
    with repo.reader() as reader:
        items = reader.history(HistoryQuery(count=100)).items  # newest first
    stamps = [v.last_updated for v in reversed(items)]
    assert len(stamps) == 60
    assert all(a < b for a, b in zip(stamps, stamps[1:], strict=False))


class _CommitFailsOnce(SQLiteDialect):
    """A store whose first commit fails (as a full disk or an I/O error would make it)."""

    armed = False

    def commit(self, conn: Any) -> None:
        if self.armed:
            self.armed = False
            self.rollback(conn)
            raise ServiceUnavailable("commit failed")
        super().commit(conn)


def test_a_failed_commit_fails_its_group_and_the_next_group_commits(tmp_path: Path) -> None:
    dialect = _CommitFailsOnce(str(tmp_path / "f.db"))
    repo = SqlRepository(dialect)
    repo.migrate()
    dialect.armed = True
    runner = Runner(repo, 1)

    async def scenario() -> tuple[list[Any], Any]:
        first = await asyncio.gather(
            *[runner.write(_create(f"F{i}")) for i in range(3)], return_exceptions=True
        )
        second = await runner.write(_create("After"))
        return first, second

    first, second = asyncio.run(scenario())
    runner.close()
    assert all(isinstance(r, ServiceUnavailable) for r in first)
    with repo.reader() as reader:
        items = reader.history(HistoryQuery(count=10)).items
        assert [v.id for v in items] == [second]
    repo.close()
