"""The validation pipeline after base structure: which profiles apply, and their rules.

1. Base structure (:mod:`server.fhir.base_validation`) runs first; a failure there is a 400 and
   this module is never reached.
2. The profiles that apply are every ``meta.profile`` the resource claims plus the
   ``required`` profiles the caller found (server rules, see
   :mod:`server.search.required_profiles`). A claimed profile the server does not know is an
   error when it is under the server's own canonical base (a typo, or a profile of another
   version of this package) and otherwise a ``not-supported`` warning, or an error when the
   server is configured so (``unknown_profile="error"``): a US Core claim on data from another
   system is normal and must not block its storage.
3. Each profile's compiled rules (:mod:`server.fhir.profiles`) report every issue; nothing
   stops at the first. ``resolve`` gives the rules the targets of references (the store for
   REST writes, the Bundle and then the store for transactions).

The result lists errors and warnings; the caller turns errors into a 422 and returns the
warnings with a successful write when the client asked for an OperationOutcome.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from server.fhir.conformance import CANONICAL_BASE, Conformance
from server.fhir.outcome import Issue
from server.fhir.profiles import ProfileSet, Resolve


@dataclass(frozen=True, slots=True)
class Findings:
    """What profile validation found: ``errors`` block a write, ``warnings`` never do."""

    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)

    @property
    def issues(self) -> list[Issue]:
        return [*self.errors, *self.warnings]

    @staticmethod
    def of(issues: Iterable[Issue]) -> Findings:
        errors: list[Issue] = []
        warnings: list[Issue] = []
        for issue in issues:
            (errors if issue.severity in ("error", "fatal") else warnings).append(issue)
        return Findings(errors, warnings)


class Validator:
    """Profile validation of resources that passed base validation."""

    def __init__(
        self,
        conformance: Conformance,
        profiles: ProfileSet,
        *,
        unknown_profile: Literal["warning", "error"] = "warning",
    ) -> None:
        self.conformance = conformance
        self.profiles = profiles
        self._unknown_severity = unknown_profile

    def claimed(self, resource: dict[str, Any], root: str) -> tuple[list[str], list[Issue]]:
        """The known profiles ``resource`` claims in ``meta.profile``, and issues for the rest."""
        meta = resource.get("meta")
        claims = meta.get("profile") if isinstance(meta, dict) else None
        known: list[str] = []
        issues: list[Issue] = []
        for i, url in enumerate(claims if isinstance(claims, list) else []):
            if not isinstance(url, str):
                continue
            where = f"{root}.meta.profile[{i}]"
            if self.profiles.knows(url):
                base_type = self.profiles.base_type(url)
                if base_type != resource.get("resourceType"):
                    issues.append(
                        Issue(
                            "error",
                            "invalid",
                            f"profile {url} constrains {base_type}, not "
                            f"{resource.get('resourceType')}",
                            where,
                        )
                    )
                else:
                    known.append(url)
            elif url.startswith(CANONICAL_BASE + "/"):
                issues.append(
                    Issue("error", "not-supported", f"unknown profile {url} of this server", where)
                )
            else:
                issues.append(
                    Issue(
                        self._unknown_severity,
                        "not-supported",
                        f"profile {url} is not known to this server; its rules were not checked",
                        where,
                    )
                )
        return known, issues

    def validate(
        self,
        resource: dict[str, Any],
        *,
        required: Iterable[str] = (),
        extra: Iterable[str] = (),
        resolve: Resolve | None = None,
        root: str | None = None,
    ) -> Findings:
        """Every profile issue of ``resource``: claimed profiles, ``required`` ones (server
        rules) and ``extra`` ones (``$validate``'s ``profile`` parameter), each checked once."""
        where = root or str(resource.get("resourceType", "Resource"))
        urls, issues = self.claimed(resource, where)
        seen = {u.partition("|")[0] for u in urls}
        for url in [*required, *extra]:
            if url.partition("|")[0] not in seen:
                seen.add(url.partition("|")[0])
                urls.append(url)
        for url in urls:
            issues += self.profiles.validate(resource, url, root=where, resolve=resolve)
        return Findings.of(dict.fromkeys(issues))  # extension rules repeat per profile
