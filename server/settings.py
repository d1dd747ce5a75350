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
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    conditional_delete_multiple: bool = Field(
        False, description="A conditional delete may delete several matches"
    )
    default_page_size: int = Field(20, ge=1)
    max_page_size: int = Field(1000, ge=1)
    search_timezone: str = Field(
        "America/Los_Angeles",
        description="Zone of dates and times without an offset, in searches and index rows",
    )
    search_parameters_dir: str | None = Field(
        None,
        description="Folder of custom SearchParameter-*.json files "
        "(default: profiles/searchparameters)",
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
    pg_pool_size: int = Field(8, ge=1)
    busy_timeout_ms: int = Field(10_000, ge=0)
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
    outbox_prune_minutes: float = Field(
        60, gt=0, description="How often each server process prunes the outbox"
    )

    @cached_property
    def fhir_base(self) -> str:
        """The absolute FHIR base URL, without a trailing slash."""
        if self.base_url:
            return self.base_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/fhir"
