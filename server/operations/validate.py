"""``[type]/$validate`` and ``[type]/[id]/$validate`` (R4 Resource-validate).

Always answers **200** with an OperationOutcome when the request itself is well formed, whether
or not the resource is valid (R4: the outcome *is* the result); 400 for bad Parameters, 404 for
an unknown instance (checked by the router), 400 for a ``profile`` the server does not know.

* ``resource``: the resource to check (a bare resource body is accepted as it); on an instance
  without ``resource``, the stored resource is checked.
* ``mode``: ``create`` (the default at type level: the body must not need an id), ``update``
  (the resource must carry the instance id), ``delete`` (nothing in the server forbids deleting
  a resource; the outcome says so), ``profile`` (only the given ``profile``).
* ``profile``: a profile to check besides those the resource claims and the server requires.

The checks are the ones a write runs (base structure, then every applicable profile with
references resolved against the store), so ``$validate`` answers exactly what a write would:
when the base errors leave the structure readable (``checks.readable``: only values are
wrong), the profile issues come in the same outcome.
"""

from __future__ import annotations

from typing import Any

from server.auth.operation_rules import ANY, CALL_TYPE, Needs
from server.errors import BadRequest
from server.fhir.base_validation import base_validator
from server.fhir.outcome import Issue, operation_outcome
from server.operations.call import Call, Implementation
from server.validation_service import reader_lookup
from server.writes.checks import readable

MODES = ("create", "update", "delete", "profile")


def run(call: Call) -> dict[str, Any]:
    params = call.params
    mode = (params.get("mode") or [None])[0]
    if mode is not None and mode not in MODES:
        raise BadRequest(
            f"mode must be one of {', '.join(MODES)}, got '{str(mode)[:40]}'", expression="mode"
        )
    profile = (params.get("profile") or [None])[0]
    validation = call.services.validation
    if profile is not None and not validation.profiles.knows(str(profile)):
        raise BadRequest(f"Profile '{str(profile)[:120]}' is not known", expression="profile")
    if mode == "profile" and profile is None:
        raise BadRequest("mode=profile needs a profile", expression="profile")
    stored = call.instance
    resource = (params.get("resource") or [None])[0]
    if mode == "delete":
        if call.id is None:
            raise BadRequest("mode=delete validates an instance: [type]/[id]/$validate")
        return operation_outcome(
            [Issue("information", "informational", f"{call.type}/{call.id} may be deleted")]
        )
    if resource is None:
        if stored is None:
            raise BadRequest("The resource parameter is required", expression="resource")
        resource = stored
    if not isinstance(resource, dict) or resource.get("resourceType") != call.type:
        got = resource.get("resourceType") if isinstance(resource, dict) else None
        raise BadRequest(
            f"The resource must be a {call.type}, got {str(got)[:40]}", expression="resource"
        )
    if mode == "update":
        if resource.get("id") is None:
            raise BadRequest("mode=update needs the resource id", expression="resource.id")
        if call.id is not None and resource.get("id") != call.id:
            raise BadRequest(
                f"The resource id '{str(resource.get('id'))[:64]}' is not the instance id",
                expression="resource.id",
            )
    issues = base_validator().validate(resource)
    if readable(issues):  # base errors that leave the structure readable: profiles too
        lookup = reader_lookup(call.reader)
        if mode == "profile":
            assert profile is not None
            findings_issues = validation.profiles.validate(
                resource, str(profile), root=call.type, resolve=validation.resolver(lookup)
            )
        else:
            extra = [str(profile)] if profile is not None else []
            findings_issues = validation.check(resource, lookup=lookup, extra=extra).issues
        issues = [*issues, *findings_issues]
    if not issues:
        issues = [Issue("information", "informational", "No issues: the resource is valid")]
    return operation_outcome(issues)


IMPLEMENTATION = Implementation(
    "Resource-validate",
    run,
    needs=(Needs(CALL_TYPE, ANY),),
)
