"""The composition root: ``create_app`` builds the services (``server/services.py``) and wires
them with the store, routes and error handling. With ``server/cli.py``, the only importer of
``server/api`` and the only place that opens the SQL adapter (import contracts in
``pyproject.toml``)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from functools import cache
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request

from server import openapi_document
from server.api import (
    async_jobs,
    audit_events,
    bulk_export,
    handlers,
    home,
    launch,
    metadata,
    operations,
    routes,
    smart,
    subscriptions,
)
from server.api.edge import Application, Edge
from server.audit.trail import AuditTrail
from server.auth.policy import Policy
from server.auth.principal import Principal
from server.auth.relationships import policies as relationship_policies
from server.auth.scope_policy import SmartScopes
from server.auth.service import AuthService
from server.ecm.program import program_rules
from server.errors import FhirError
from server.fhir.base_validation import base_validator
from server.fhir.instant import now_us
from server.jobs import JobRunner
from server.logs import configure
from server.search.parse import SearchContext
from server.services import Services, build_services, default_operations
from server.settings import Settings
from server.store.base import Outbox, Repository
from server.store.runner import Runner
from server.store.sql.opening import open_store
from server.subscriptions.rule import SubscriptionRule
from server.subscriptions.service import Owners, SubscriptionService
from server.writes.pipeline import Pipeline
from server.writes.rules import Rule, RuleSet, default_rules

logger = logging.getLogger("calaim_fhir.outbox")


def access_policies(
    settings: Settings, search: SearchContext, given: Sequence[Policy] = ()
) -> tuple[Policy, ...]:
    """The application's access policies: a token's scopes whenever authentication is on,
    with it the care relationships when ``access_relationships`` is on, then ``given`` (every
    one must permit)."""
    if settings.auth == "off":
        return tuple(given)
    related = relationship_policies(
        settings.access_relationships, settings.access_matrix, settings.coordination_platform
    )
    return (SmartScopes(search), *related, *given)


def create_app(
    settings: Settings | None = None,
    *,
    services: Services | None = None,
    store: Repository | None = None,
    rules: Sequence[Rule] = (),
    principals: Callable[[Request], Principal] | None = None,
    policies: Sequence[Policy] = (),
    subscription_owners: Owners | None = None,
) -> FastAPI:
    """A FHIR server application. ``services``: the search, validation and definitions services
    (default: built from ``settings`` here, once; ``server/services.py``). Without ``store``,
    the configured database is opened (and migrated) at start-up and closed at shutdown.
    ``rules`` run on every write after the server's own (``server/writes/rules.py``).
    ``principals`` names the caller of a request (default: the principal of the request's access
    token, ``server/api/authentication.py``); tests use it to act as organisations, users and
    patients. ``policies``: the access policies every principal without ``allow_all`` is
    narrowed by (``server/auth/policy.py``); such a principal reaches nothing no policy grants.
    ``subscription_owners``: who a subscription's owner is at send time (default: the registered
    client's current rights, ``server/subscriptions/service.py``).

    Authentication is on (SMART backend services) unless ``settings.auth`` is ``off``
    (``CALAIM_FHIR_AUTH=off``); with it off, only loopback requests are answered. With it on,
    the SMART scopes of each token are one of the access policies (``scope_policy.py``), before
    those given."""
    settings = settings or Settings()
    services = services if services is not None else build_services(settings)
    search = services.search

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure()
        owned = store is None
        repo = open_store(settings, search) if store is None else store
        runner = Runner(repo, settings.pg_pool_size)
        # a policy may bring the write rules that keep it whole (relationships.py)
        policy_rules = [r for p in app.state.policies for r in getattr(p, "rules", list)()]
        base_validator()  # load the schema before the first request, not during it
        pipeline = Pipeline(
            services.validation,
            RuleSet(
                [
                    *default_rules(),
                    *program_rules(settings, search.context),
                    SubscriptionRule(
                        repo.subscriptions,
                        search.context,
                        email=settings.smtp_host is not None,
                    ),
                    *policy_rules,
                    *rules,
                ]
            ),
            search.context,
            settings.conditional_delete_multiple,
        )
        app.state.definitions = services.definitions
        jobs = JobRunner(
            repo.jobs,
            retention_seconds=settings.async_retention_hours * 3600,
            stale_seconds=settings.async_stale_seconds,
            workers=settings.async_workers,
        )
        jobs.start(asyncio.get_running_loop())
        app.state.store, app.state.runner, app.state.jobs = repo, runner, jobs
        if settings.auth == "smart":
            auth = AuthService(settings, repo.auth, search.context)
            await asyncio.to_thread(auth.start)  # the first signing key, if there is none
            app.state.auth = auth
        app.state.pipeline = pipeline
        audit = app.state.audit = AuditTrail(
            repo.audit, settings.audit_reads, settings.audit_flush_seconds
        )
        audit.start()
        stop = asyncio.Event()
        pruning = asyncio.create_task(_prune(repo.outbox, settings, stop))
        service = app.state.subscriptions = SubscriptionService(
            repo,
            runner,
            settings,
            search.context,
            search.indexer,
            app.state.policies,
            owners=subscription_owners,
        )
        delivering = (
            asyncio.create_task(service.run(stop)) if delivers_inline(settings) else None
        )
        # what start-up loaded (definitions, profiles, the search registry) lives as long as
        # the app: kept out of the cyclic collector's full passes, which would otherwise walk
        # it all (about 0.1 s of CPU) every few requests that allocate much
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            stop.set()
            await pruning  # never cancelled while its statement runs on a thread
            if delivering is not None:
                await delivering
            # off the loop: a job may be waiting for the loop to run its write unit
            await asyncio.to_thread(jobs.close)
            await asyncio.to_thread(audit.close)
            runner.close()
            if owned:
                repo.close()

    app = Application(
        title="calaim-fhir",
        version="0.1.0",
        description="FHIR R4 (4.0.1) server for Medi-Cal Enhanced Care Management and "
        "Community Supports. Every error answer is an OperationOutcome.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served by home.py: the post-processed document (openapi_document)
        # no OpenTelemetry from the framework: its spans would carry URLs, whose query strings
        # may hold PHI; the request log line (logs.py) is the server's record of a request
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.openapi_document = served_openapi  # bytes of /openapi.json, built on first use
    app.state.settings = settings
    app.state.services = services
    app.state.principals = principals
    app.state.policies = access_policies(settings, search.context, policies)
    app.state.strict_access = settings.access_safety_net == "fail"
    app.include_router(smart.router, prefix="/fhir")
    app.include_router(launch.router, prefix="/fhir")
    app.include_router(bulk_export.router, prefix="/fhir")
    app.include_router(subscriptions.router, prefix="/fhir")
    app.include_router(audit_events.router, prefix="/fhir")
    app.include_router(routes.router, prefix="/fhir")
    app.include_router(metadata.router, prefix="/fhir")
    app.include_router(operations.router, prefix="/fhir")
    app.include_router(async_jobs.router, prefix="/fhir")
    app.include_router(routes.fallback, prefix="/fhir")
    app.include_router(home.router)
    handlers.install(app)
    # headers, CORS, audit, authentication, HEAD, gzip and the read/write shortcut: one layer
    # in front of FastAPI's own stack (edge.py)
    app.edge = Edge(app.handle, settings)
    return app


def openapi_routes() -> dict[str, Any]:
    """FastAPI's document of the application's routes: they do not depend on the settings, so
    no store is opened and no setting is read."""
    routes: dict[str, Any] = create_app(Settings.model_construct()).openapi()
    return routes


@cache
def served_openapi() -> bytes:
    """The OpenAPI document as served at ``/openapi.json`` and committed in
    ``openapi/openapi.json`` (built once per process)."""
    document = openapi_document.document_of(openapi_routes(), default_operations())
    return openapi_document.render(document).encode()


def delivers_inline(settings: Settings) -> bool:
    """Whether each server process matches and delivers subscription notifications itself
    (``subscription_delivery=inline``); otherwise a ``calaim-fhir deliver`` process does."""
    return settings.subscriptions and settings.subscription_delivery == "inline"


async def deliver(
    settings: Settings,
    stop: asyncio.Event,
    *,
    services: Services | None = None,
    store: Repository | None = None,
) -> None:
    """Match outbox events and deliver subscription notifications until ``stop``, with no HTTP
    server: the ``calaim-fhir deliver`` process (``docs/subscriptions.md``, "Delivery in a
    process of its own"). The same service, leases and guarantees as inline delivery; other
    processes' commits are seen every ``subscription_poll_seconds``."""
    services = services if services is not None else build_services(settings)
    search = services.search
    repo = open_store(settings, search) if store is None else store
    runner = Runner(repo, settings.pg_pool_size)
    try:
        service = SubscriptionService(
            repo,
            runner,
            settings,
            search.context,
            search.indexer,
            access_policies(settings, search.context),
        )
        # as in the server (``create_app``): what start-up loaded is kept out of the cyclic
        # collector's full passes, which the notifications' allocations would otherwise
        # trigger every few rounds, each walking it all
        gc.freeze()
        try:
            await service.run(stop)
        finally:
            gc.unfreeze()
    finally:
        runner.close()
        if store is None:
            repo.close()


async def _prune(outbox: Outbox, settings: Settings, stop: asyncio.Event) -> None:
    """Prune the outbox every ``outbox_prune_minutes`` (the first time one interval after
    start-up) until ``stop``: the events every consumer has passed, once they are older than
    the retention's minimum age."""
    keep_us = int(settings.outbox_retention_days * 86_400 * 1_000_000)
    every = settings.outbox_prune_minutes * 60
    while True:
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        if stop.is_set():
            return
        try:
            pruned = await asyncio.to_thread(outbox.prune, now_us() - keep_us)
            if pruned:
                logger.info("outbox: pruned %d events", pruned)
        except FhirError:  # the database is unavailable: try again next time
            logger.warning("outbox: not pruned (database unavailable)")
