"""A write from a request through the pipeline: prepared where the store's reads run, then run
in one write unit (group commit)."""

from __future__ import annotations

from server.store.authorized import AuthorizedRepository
from server.writes.pipeline import Pipeline
from server.writes.write import Write, Written


async def submit(repo: AuthorizedRepository, pipeline: Pipeline, write: Write) -> Written:
    prepared = await repo.checking(lambda reader, view: pipeline.prepare(write, reader, view))
    principal = repo.principal
    return await repo.writing(lambda unit: pipeline.in_unit(unit, principal).run(prepared))
