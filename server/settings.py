"""Server settings: command-line flags and CALAIM_FHIR_* environment variables."""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CALAIM_FHIR_", frozen=True)

    database_url: str = Field(
        "sqlite:///./data/calaim-fhir.db",
        description="sqlite:///path/to/file.db (embedded) or postgresql://... (production)",
    )
    base_url: str | None = Field(
        None, description="Absolute base of every URL the server writes; default: listen address"
    )
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = Field(1, ge=1)
    insecure_no_auth: bool = Field(
        False, description="Allow listening on a non-loopback address without authentication"
    )
    auth: Literal["smart", "off"] = Field(
        "smart",
        description="smart: every request but discovery needs a SMART backend-services access "
        "token (docs/security.md); off: no authentication, and only loopback requests are "
        "answered (any other is refused 403)",
    )
    token_lifetime_seconds: int = Field(
        300, ge=30, le=300, description="Lifetime of the access tokens the server issues"
    )
    refresh_offline_seconds: int = Field(
        30 * 86400, ge=3600, le=90 * 86400,
        description="Absolute lifetime of a launch's refresh tokens with offline_access",
    )
    refresh_online_seconds: int = Field(
        12 * 3600, ge=600, le=86400,
        description="Absolute lifetime of a launch's refresh tokens with online_access (a "
        "working day: the user is at work, not signed in elsewhere)",
    )
    auth_leeway_seconds: int = Field(
        30, ge=0, le=60, description="Clock skew allowed on exp, nbf and iat of client assertions"
    )
    jwks_private_networks: str = Field(
        "",
        description="Comma-separated networks (CIDR) a client's jwks_uri may resolve into "
        "although they are loopback, private, link-local or metadata addresses",
    )
    jwks_allow_http_loopback: bool = Field(
        False, description="Allow an http:// jwks_uri on a loopback address (tests only)"
    )
    # -- an external identity provider (docs/security.md, "External identity providers") --
    idp_issuer: str | None = Field(
        None, description="Exact iss of access tokens issued by an external identity provider"
    )
    idp_audience: str | None = Field(
        None, description="Resource id its tokens' aud must contain (default: the FHIR base URL)"
    )
    idp_algorithms: str = Field("RS256,RS384,ES256,ES384", description="Its pinned algorithms")
    idp_jwks_url: str | None = Field(None, description="Its JWKS URL (JWT access tokens)")
    idp_introspection_url: str | None = Field(
        None, description="Its RFC 7662 introspection endpoint (opaque tokens)"
    )
    idp_introspection_client_id: str | None = None
    idp_introspection_client_secret: str | None = None
    idp_organization_claim: str = Field(
        "organization", description="Claim naming the caller's Organization (Organization/id)"
    )
    idp_user_claim: str = Field(
        "", description="Claim naming the user (a token without it is refused); empty: none"
    )
    idp_purpose_claim: str = Field("purpose", description="Claim listing purposes of use")
    max_body_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1024,
        description="Most bytes of a request body (a gzip body: once decompressed); 413 above",
    )
    max_header_bytes: int = Field(
        32 * 1024,
        ge=4096,
        description="Most bytes of a request's line and headers together; 431 above (414 for "
        "the URL alone)",
    )
    max_headers: int = Field(100, ge=10, description="Most header fields of a request; 431 above")
    request_timeout_seconds: float = Field(
        30,
        gt=0,
        description="A request must arrive whole (headers and body) within this long from its "
        "first byte; 408 otherwise",
    )
    cors_origins: str = Field(
        "",
        description="Comma-separated browser origins (https://app.example.org) allowed to call "
        "the API cross-origin (CORS); empty (the default): CORS is off",
    )
    conditional_delete_multiple: bool = Field(
        False, description="A conditional delete may delete several matches"
    )
    default_page_size: int = Field(20, ge=1)
    max_page_size: int = Field(1000, ge=1)
    default_total: Literal["auto", "accurate", "none"] = Field(
        "auto",
        description="Bundle.total of a search without _total. auto: the exact count when "
        "counting is cheap (fewer than 1,000 index entries to count), otherwise the "
        "database's estimate for a caller who may see every row (PostgreSQL), otherwise none; "
        "accurate: always the exact count (a broad search then counts every match); none: only "
        "when _total, _summary=count or _count=0 asks",
    )
    search_timezone: str = Field(
        "America/Los_Angeles",
        description="Zone of dates and times without an offset: searches, index rows, history "
        "_since/_at, $everything start/end, $export _since, AuditEvent date",
    )
    search_parameters_dir: str | None = Field(
        None,
        description="Folder of custom SearchParameter-*.json files "
        "(default: profiles/searchparameters)",
    )
    max_response_bytes: int = Field(
        4 * 1024 * 1024,
        ge=64 * 1024,
        description="Most bytes of resources in one response (search and history pages, "
        "$everything, batch and transaction responses), besides its count limits: a page ends "
        "early with a next link; a single larger resource is still returned, alone",
    )
    max_include: int = Field(
        1000, ge=1, description="Most resources _include/_revinclude add to one search page"
    )
    unknown_profile: Literal["warning", "error"] = Field(
        "warning",
        description="What a meta.profile the server does not know (outside its own canonical "
        "base, where an unknown profile is always an error) makes of a write",
    )
    require_profiles: bool = Field(
        True,
        description="Apply the profiles whose profile-required-for criteria a resource meets, "
        "whether or not meta.profile claims them",
    )
    access_safety_net: Literal["filter", "fail"] = Field(
        "filter",
        description="What the per-resource access decision does with a resource the access "
        "policies' narrowing let through but its indexed facts refuse: leave it out (filter), "
        "or fail the request (fail: for tests, where the two must always agree)",
    )
    access_relationships: bool = Field(
        True,
        description="Narrow every principal acting for an organisation by its care "
        "relationships with members and their data classes (docs/security.md, "
        "'Relationships and data classes'); operators are not narrowed. On by default "
        "whenever authentication is on; false turns the narrowing off (a token's scopes "
        "alone decide); without authentication it has no effect",
    )
    access_matrix: str | None = Field(
        None,
        description="JSON file of the plan's data-class matrix (classes, kinds, scoped, "
        "grace_days, purposes; docs/security.md); unset: the documented default",
    )
    access_sensitivity: str | None = Field(
        None,
        description="JSON file of the plan's sensitive-data value sets and 42 CFR Part 2 "
        "programs, labelled on write (docs/security.md, 'Sensitive data'); unset: the "
        "documented substance-use default",
    )
    pg_pool_size: int = Field(8, ge=1)
    busy_timeout_ms: int = Field(10_000, ge=0)
    query_budget_ms: int = Field(
        10_000,
        ge=0,
        description="Time budget of one search in the database (SQLite: its statements "
        "together; PostgreSQL: statement_timeout of each); past it the search is answered "
        "400 too-costly. 0: none",
    )
    async_workers: int = Field(
        2, ge=1, description="Asynchronous jobs (Prefer: respond-async) run at once per process"
    )
    async_retention_hours: float = Field(
        24,
        gt=0,
        description="How long the result of an asynchronous job is kept after it ends",
    )
    async_stale_seconds: float = Field(
        300,
        gt=0,
        description="A running asynchronous job whose worker has not been heard from for this "
        "long is reported failed (its worker stopped)",
    )
    export_dir: str | None = Field(
        None,
        description="Where $export writes its NDJSON files (one folder per export); default: "
        "next to the SQLite file, or a folder per database in the system's temporary folder "
        "for PostgreSQL. Every worker process of a store must see the same folder, and no "
        "two stores may share one (a kick-off removes the folders of jobs its store does "
        "not know)",
    )
    export_file_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="$export starts a new NDJSON file of a type past this many bytes",
    )
    export_max_running: int = Field(
        2, ge=1, description="$export jobs one principal may have running at once; 429 past it"
    )
    export_min_poll_seconds: float = Field(
        0.5,
        ge=0,
        description="An $export status polled sooner than this after the last poll: 429",
    )
    outbox_retention_days: float = Field(
        30,
        gt=0,
        description="The minimum age of an outbox event before it may be pruned (and only once "
        "every registered consumer has read past it)",
    )
    coordination_platform: str | None = Field(
        None,
        pattern=r"^Organization/[A-Za-z0-9\-.]{1,64}$",
        description="The coordination platform's Organization (Organization/id): it routes "
        "referrals (sets Task.owner) and splits them into sub-referrals (docs/closed-loop.md)",
    )
    # -- the ECM referral workflow's plan configuration (docs/ecm-workflow.md) --
    ecm_referral_decision_business_days: int = Field(
        5,
        ge=0,
        le=365,
        description="Default business days from the receipt of an ECM referral to the plan's "
        "decision (Task.restriction.period.end); the seeds give no number (seed 003 VI.D.6-8). "
        "A plan's own file in ecm_plan_config_dir overrides it",
    )
    ecm_plan_config_dir: str | None = Field(
        None,
        description="Folder of per-plan configuration files of the ECM referral workflow (one "
        "JSON file per plan Organization: deadlines, holidays; docs/ecm-workflow.md)",
    )
    outbox_prune_minutes: float = Field(
        60, gt=0, description="How often each server process prunes the outbox"
    )
    # -- audit trail (docs/security.md "Audit") --
    audit_reads: Literal["batch", "sync", "off"] = Field(
        "batch",
        description="How reads and searches are audited: batch (written off the request path "
        "every audit_flush_seconds: the loss window), sync (committed before the answer) or "
        "off. Writes are audited from the outbox in every mode",
    )
    audit_flush_seconds: float = Field(
        1.0, gt=0, le=60, description="How often queued read audit records are written"
    )
    # -- topic-based subscriptions (docs/subscriptions.md) --
    subscriptions: bool = Field(
        True,
        description="Run the subscription matcher and deliverer at all (false: as "
        "subscription_delivery=off)",
    )
    subscription_delivery: Literal["inline", "process", "off"] = Field(
        "inline",
        description="Where the subscription matcher and deliverer run: inline (in each server "
        "process), process (`serve` starts one `calaim-fhir deliver` process at lower "
        "priority; the server processes only append to the outbox) or off (run "
        "`calaim-fhir deliver` yourself, or nothing is delivered)",
    )
    subscription_delivery_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="How much lower the priority (nice) of a `calaim-fhir deliver` process is",
    )
    subscription_retry_hours: float = Field(
        72,
        gt=0,
        description="How long a failing endpoint is retried (exponential backoff with jitter) "
        "before its subscription is set to error",
    )
    subscription_backoff_max_seconds: float = Field(
        3600, gt=0, description="The longest wait between two delivery attempts"
    )
    subscription_notification_interval_seconds: float = Field(
        0.5,
        ge=0,
        description="While events keep coming, a subscription gets at most one notification "
        "this often: the events in between travel together in the next one (a backlog "
        "larger than max-count, a handshake or a retry does not wait)",
    )
    subscription_event_retention_days: float = Field(
        30, gt=0, description="How long delivered notification events are kept ($events)"
    )
    subscription_private_networks: str = Field(
        "",
        description="Comma-separated networks (CIDR) a rest-hook endpoint may resolve into "
        "besides public addresses (a partner on a private link)",
    )
    subscription_allow_http_loopback: bool = Field(
        False, description="Allow http:// rest-hook endpoints on a loopback address (tests)"
    )
    subscription_timeout_seconds: float = Field(
        10,
        gt=0,
        description="Connect and read timeout of one rest-hook POST (a subscription's "
        "backport-timeout may shorten it); a delivery lease lasts twice this plus 5 seconds",
    )
    smtp_host: str | None = Field(
        None,
        description="The SMTP relay of email subscriptions (unset: the email channel is refused)",
    )
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_from: str = Field(
        "calaim-fhir@localhost", description="The sender of subscription email notifications"
    )
    smtp_starttls: bool = Field(False, description="Use STARTTLS with the SMTP relay")
    subscription_poll_seconds: float = Field(
        1.0, gt=0, description="How often the matcher looks for events written by other processes"
    )
    # -- $ecm-eligibility plan configuration (docs/eligibility.md, "Plan configuration") --
    plan_identifier: str | None = Field(
        None,
        description="system|value of the plan Organization's identifier: the eligibility baseline "
        "counts only Medi-Cal managed care Coverages whose payor names it (seed 003 VI.A.1); "
        "unset: any Medi-Cal managed care payor counts and the answer says so",
        pattern=r"^[^|]+\|[^|]+$",
    )
    eligibility_release_horizon_days: int = Field(
        90,
        ge=0,
        description="Days ahead an expected release date makes custody count as transitioning "
        "from incarceration (seed 003 VI.A.4.e.1, VI.A.5.d.1)",
    )
    eligibility_pregnancy_stale_days: int = Field(
        300,
        ge=1,
        description="Pregnancy evidence older than this, with no delivery after it, is stale: "
        "insufficient-data (seed 003 VI.A.4.h.1; seed 000)",
    )
    eligibility_housing_loss_days: int = Field(
        30,
        ge=0,
        description="Imminent housing loss: evidence dated within this many days before asOf, or "
        "a loss date within this many days after (seed 003 VI.A.4.a.2.e, VI.A.4.b.2.e)",
    )
    eligibility_youth_adult_facility: bool = Field(
        True,
        description="A youth released from an adult correctional facility counts as transitioning "
        "from a youth correctional facility (seed 003 VI.A.5.d.1); the answer says which reading",
    )
    eligibility_cs_discharge_days: int = Field(
        7,
        ge=0,
        description="$cs-eligibility: days after a discharge during which a member is still "
        "exiting an inpatient stay or recuperative care (short-term post-hospitalization "
        "housing, seed 004; the seeds give no number)",
    )
    eligibility_complex_social_factor_valueset: str = Field(
        "http://calaim-fhir.org/fhir/ValueSet/ecm-elig-complex-social-factor",
        description="Canonical URL of the ValueSet of complex social factors "
        "(seed 003 VI.A.4.d.3, VI.A.4.f.2)",
    )

    @cached_property
    def allowed_origins(self) -> tuple[str, ...]:
        """``cors_origins`` as a tuple (empty: CORS off)."""
        return tuple(o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip())

    @cached_property
    def fhir_base(self) -> str:
        """The absolute FHIR base URL, without a trailing slash."""
        if self.base_url:
            return self.base_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/fhir"
