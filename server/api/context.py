"""What a request handler gets from the application: settings, the authorized repository, the
write pipeline and the asynchronous job runner."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

from server.auth.principal import LOCAL, Principal
from server.jobs import JobRunner
from server.settings import Settings
from server.store.authorized import AuthorizedRepository
from server.writes.pipeline import Pipeline


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def principal_of(request: Request) -> Principal:
    """The caller, as the application's principal resolver names it (``create_app``). Until
    authentication exists, every caller is the local operator principal (the CLI refuses to
    listen beyond loopback without ``--insecure-no-auth``)."""
    resolve: Callable[[Request], Principal] | None = getattr(request.app.state, "principals", None)
    return LOCAL if resolve is None else resolve(request)


def repository(request: Request) -> AuthorizedRepository:
    """The door bound to the caller and the application's access policies (``create_app``);
    its writes' outbox events carry the request id; the conformance definitions are read
    through it too."""
    state = request.app.state
    return AuthorizedRepository(
        state.runner,
        principal_of(request),
        request.scope.get("calaim.request_id"),
        state.policies,
        state.definitions,
        state.strict_access,
    )


def pipeline_of(request: Request) -> Pipeline:
    """The application's write pipeline."""
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


def jobs_of(request: Request) -> JobRunner:
    """The application's asynchronous job runner."""
    jobs: JobRunner = request.app.state.jobs
    return jobs


def note(request: Request, interaction: str, type: str | None, id: str | None) -> None:
    """Record what the request is, for the structured request log (never resource content)."""
    log = request.scope.get("calaim.log")
    if log is not None:
        log["interaction"] = interaction
        log["type"] = type
        log["id"] = id
