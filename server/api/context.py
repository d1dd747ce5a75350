"""What a request handler gets from the application: settings, the services, the authorized
repository, the write pipeline and the asynchronous job runner (all built by ``create_app``)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

from server.auth.principal import LOCAL, Principal
from server.errors import Unauthorized
from server.jobs import JobRunner
from server.services import Services
from server.settings import Settings
from server.store.authorized import AuthorizedRepository
from server.writes.pipeline import Pipeline


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def services_of(request: Request) -> Services:
    """The application's services (search, validation, definitions: ``server/services.py``)."""
    services: Services = request.app.state.services
    return services


def principal_of(request: Request) -> Principal:
    """The caller: as the application's principal resolver names it when one was given
    (``create_app(principals=...)``, a test seam); else the principal the authentication layer
    found for the request's access token (``authentication.py``); with authentication off, the
    local operator (only loopback requests get this far)."""
    resolve: Callable[[Request], Principal] | None = getattr(request.app.state, "principals", None)
    if resolve is not None:
        return resolve(request)
    found: Principal | None = request.scope.get("calaim.principal")
    if found is not None:
        return found
    if settings_of(request).auth == "off":
        return LOCAL
    raise Unauthorized(
        "An access token is required", headers={"WWW-Authenticate": 'Bearer realm="calaim-fhir"'}
    )


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
