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
from server.fhir.profile_validation import Findings
from server.search.required_profiles import Lookup
from server.search.service import build_search_service
from server.settings import Settings
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
    search = build_search_service(Settings(database_url="sqlite:///unused.db")).context
    return Pipeline(validation, RuleSet(), search)  # type: ignore[arg-type]


def _write(runner: Runner, fn: Any) -> Any:
    return asyncio.run(runner.write(fn))


def _target(runner: Runner, text: str, id: str = "t") -> None:
    body = {"resourceType": "Basic", "id": id, "code": {"text": text}}
    _write(runner, lambda unit: unit.update("Basic", id, body))


def _referrer() -> Write:
    resource = {"resourceType": "Basic", "code": {"text": "r"}, "subject": {"reference": "Basic/t"}}
    return Write("create", "Basic", resource=resource)


class Scene:
    """A store with a good target, a pipeline whose validation counts its calls, and a
    referrer to write."""

    def __init__(self, repo: SqlRepository, runner: Runner) -> None:
        self.repo, self.runner = repo, runner
        self.validation = TargetMustBeGood()
        self.pipeline = _pipeline(self.validation)
        _target(runner, "good")

    def settle(self, changed: bool, run: Any) -> Any:
        """Maybe change the target, then run ``run`` in a unit; its result, or the error."""
        assert self.validation.calls == 1  # validated once, outside the unit
        if changed:
            _target(self.runner, "bad")  # committed between prepare and the unit
        try:
            return _write(self.runner, run)
        except Exception as exc:  # noqa: BLE001 - the caller asserts on it
            return exc


@pytest.fixture
def scene(store: tuple[SqlRepository, Runner]) -> Scene:
    return Scene(*store)


@pytest.mark.parametrize("changed", [False, True])
def test_a_write_is_validated_again_only_when_a_target_it_read_changed(
    scene: Scene, changed: bool
) -> None:
    pipeline = scene.pipeline
    with scene.repo.reader() as reader:
        prepared = pipeline.prepare(_referrer(), reader)  # valid as read now
    outcome = scene.settle(changed, lambda unit: pipeline.in_unit(unit, LOCAL).run(prepared))
    if changed:
        assert isinstance(outcome, Unprocessable)
        with scene.repo.reader() as reader:
            assert reader.scan("Basic", None, 10)[-1].id == "t"  # the referrer was not stored
    else:
        assert outcome.result.created
    assert (scene.validation.calls, pipeline.stats["revalidated"]) == (
        (2, 1) if changed else (1, 0)
    )


@pytest.mark.parametrize("changed", [False, True])
def test_a_transaction_plan_is_kept_only_while_its_reads_hold(scene: Scene, changed: bool) -> None:
    pipeline = scene.pipeline
    entry = transaction.Entry(0, None, prepared=pipeline.prepare(_referrer(), None))
    entry.original = entry.prepared.resource  # type: ignore[union-attr]
    with scene.repo.reader() as reader:
        planned = transaction.plan(pipeline, [entry], reader)
    assert planned is not None
    outcome = scene.settle(
        changed,
        lambda unit: transaction.run(pipeline.in_unit(unit, LOCAL), [entry], planned),
    )
    if changed:
        assert isinstance(outcome, transaction.EntryFailed) and outcome.error.status == 422
    else:
        [written] = outcome
        assert written.result.created
    assert (scene.validation.calls, pipeline.stats["revalidated"]) == (
        (2, 1) if changed else (1, 0)
    )
