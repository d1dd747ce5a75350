"""Validation outside the writers' lock holds only for the data the unit commits: a write whose
validation read a target that changed before its unit ran is validated again in the unit."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.auth.principal import LOCAL
from server.errors import Unprocessable
from server.fhir.outcome import Issue
from server.fhir.validator import Findings
from server.search.profile_rules import Lookup
from server.search.service import search_service
from server.settings import Settings
from server.store.base import Unit
from server.store.runner import Runner
from server.store.sql.adapter import SqlRepository
from server.store.sql.dialect import SQLiteDialect
from server.writes import transaction
from server.writes.pipeline import Pipeline
from server.writes.rules import RuleSet
from server.writes.write import Write


class TargetMustBeGood:
    """A stand-in for profile validation: a Basic's subject must be a Basic whose code.text is
    "good". Counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def check(
        self, resource: dict[str, Any], *, lookup: Lookup | None = None, root: str | None = None
    ) -> Findings:
        self.calls += 1
        reference = resource.get("subject", {}).get("reference", "")
        type, _, id = reference.partition("/")
        target = lookup(type, id) if lookup is not None and id else None
        if target is None or target.get("code", {}).get("text") != "good":
            return Findings([Issue("error", "processing", "bad subject", "Basic.subject")])
        return Findings()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[SqlRepository, Runner]]:
    repo = SqlRepository(SQLiteDialect(str(tmp_path / "p.db")))
    repo.migrate()
    runner = Runner(repo, 1)
    yield repo, runner
    runner.close()
    repo.close()


def _pipeline(validation: TargetMustBeGood) -> Pipeline:
    search = search_service(Settings(database_url="sqlite:///unused.db")).context
    return Pipeline(validation, RuleSet(), search)  # type: ignore[arg-type]


def _write(runner: Runner, fn: Any) -> Any:
    return asyncio.run(runner.write(fn))


def _target(runner: Runner, text: str, id: str = "t") -> None:
    body = {"resourceType": "Basic", "id": id, "code": {"text": text}}
    _write(runner, lambda unit: unit.update("Basic", id, body))


def _referrer() -> Write:
    resource = {"resourceType": "Basic", "code": {"text": "r"}, "subject": {"reference": "Basic/t"}}
    return Write("create", "Basic", resource=resource)


@pytest.mark.parametrize("changed", [False, True])
def test_a_write_is_validated_again_only_when_a_target_it_read_changed(
    store: tuple[SqlRepository, Runner], changed: bool
) -> None:
    repo, runner = store
    validation = TargetMustBeGood()
    pipeline = _pipeline(validation)
    _target(runner, "good")
    with repo.reader() as reader:
        prepared = pipeline.prepare(_referrer(), reader)  # valid as read now
    assert validation.calls == 1
    if changed:
        _target(runner, "bad")  # committed between prepare and the unit

    def run(unit: Unit) -> Any:
        return pipeline.in_unit(unit, LOCAL).run(prepared)

    if changed:
        with pytest.raises(Unprocessable):
            _write(runner, run)
        assert validation.calls == 2 and pipeline.stats["revalidated"] == 1
        with repo.reader() as reader:
            assert reader.scan("Basic", None, 10)[-1].id == "t"  # the referrer was not stored
    else:
        assert _write(runner, run).result.created
        assert validation.calls == 1 and pipeline.stats["revalidated"] == 0


@pytest.mark.parametrize("changed", [False, True])
def test_a_transaction_plan_is_kept_only_while_its_reads_hold(
    store: tuple[SqlRepository, Runner], changed: bool
) -> None:
    repo, runner = store
    validation = TargetMustBeGood()
    pipeline = _pipeline(validation)
    _target(runner, "good")
    entry = transaction.Entry(0, None, prepared=pipeline.prepare(_referrer(), None))
    entry.original = entry.prepared.resource  # type: ignore[union-attr]
    with repo.reader() as reader:
        planned = transaction.plan(pipeline, [entry], reader)
    assert planned is not None and validation.calls == 1
    if changed:
        _target(runner, "bad")

    def run(unit: Unit) -> Any:
        return transaction.run(pipeline.in_unit(unit, LOCAL), [entry], planned)

    if changed:
        with pytest.raises(transaction.EntryFailed) as failed:
            _write(runner, run)
        assert failed.value.error.status == 422
        assert validation.calls == 2 and pipeline.stats["revalidated"] == 1
    else:
        [written] = _write(runner, run)
        assert written.result.created
        assert validation.calls == 1 and pipeline.stats["revalidated"] == 0
