"""FHIR errors: one exception tree, each class carrying its HTTP status and issue code.

::

    FhirError                      (500, exception)
    +-- BadRequest                 (400, invalid)
    |   +-- InvalidResource        (400, structure)   every base-structure issue listed
    |   +-- InvalidSearch          (400, invalid)
    +-- Unauthorized               (401, login)       no valid access token
    +-- Forbidden                  (403, forbidden)
    +-- NotFound                   (404, not-found)
    |   +-- UnknownType            (404, not-supported)
    |   +-- UnknownVersion         (404, not-found)
    +-- Gone                       (410, deleted)
    +-- MethodNotAllowed           (405, not-supported)
    +-- NotAcceptable              (406, not-supported)
    +-- RequestTimeout             (408, timeout)     the body did not arrive whole
    +-- Conflict                   (409, conflict)
    +-- PreconditionFailed         (412, conflict)
    |   +-- MultipleMatches        (412, multiple-matches)
    +-- PayloadTooLarge            (413, too-long)
    +-- UnsupportedMediaType       (415, not-supported)
    +-- Unprocessable              (422, processing)  profile and business-rule failures
    +-- DatabaseDamaged            (500, exception)   a corrupt database (an operator must act)
    +-- TooManyRequests            (429, throttled)   too many concurrent jobs or polls
    +-- InsufficientStorage        (507, exception)   the database's disk is full
    +-- ServiceUnavailable         (503, transient)   infrastructure failures; Retry-After
    |   +-- TransactionConflict    (503, transient)   serialization failure or deadlock:
    |                                                 retried inside the server first
    BadRequest
    +-- TooCostly                  (400, too-costly)  more than the database can run
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from server.fhir.outcome import Issue, operation_outcome


class FhirError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "exception"

    def __init__(
        self,
        diagnostics: str = "",
        *,
        expression: str | None = None,
        issues: Sequence[Issue] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics or (issues[0].diagnostics if issues else ""))
        if issues:
            self.issues: list[Issue] = list(issues)
        else:
            self.issues = [Issue("error", self.code, diagnostics, expression)]
        self.headers = headers or {}

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


class BadRequest(FhirError):
    status = 400
    code = "invalid"


class InvalidResource(BadRequest):
    code = "structure"


class InvalidSearch(BadRequest):
    code = "invalid"


class TooCostly(BadRequest):
    code = "too-costly"


class Unauthorized(FhirError):
    """No valid access token: answered with ``WWW-Authenticate: Bearer`` (RFC 6750)."""

    status = 401
    code = "login"


class Forbidden(FhirError):
    status = 403
    code = "forbidden"


class OutsideView(Forbidden):
    """A write whose result the caller may not see: ``target`` (``Type/id``) names it, so that
    a transaction can point at the entry that wrote it."""

    def __init__(self, diagnostics: str, target: str) -> None:
        super().__init__(diagnostics)
        self.target = target


class NotFound(FhirError):
    status = 404
    code = "not-found"


class UnknownType(NotFound):
    code = "not-supported"


class UnknownVersion(NotFound):
    code = "not-found"


class Gone(FhirError):
    status = 410
    code = "deleted"


class MethodNotAllowed(FhirError):
    status = 405
    code = "not-supported"


class NotAcceptable(FhirError):
    status = 406
    code = "not-supported"


class Conflict(FhirError):
    status = 409
    code = "conflict"


class PreconditionFailed(FhirError):
    status = 412
    code = "conflict"


class MultipleMatches(PreconditionFailed):
    code = "multiple-matches"


class RequestTimeout(FhirError):
    status = 408
    code = "timeout"


class PayloadTooLarge(FhirError):
    status = 413
    code = "too-long"


class UnsupportedMediaType(FhirError):
    status = 415
    code = "not-supported"


class Unprocessable(FhirError):
    status = 422
    code = "processing"


class DatabaseDamaged(FhirError):
    status = 500
    code = "exception"


class TooManyRequests(FhirError):
    """Past a limit of the caller's concurrent work or polling rate; ``Retry-After`` says when
    to try again."""

    status = 429
    code = "throttled"

    def __init__(self, diagnostics: str, retry_after: int = 5, **kw: Any):
        headers = kw.pop("headers", None) or {}
        headers.setdefault("Retry-After", str(retry_after))
        super().__init__(diagnostics, headers=headers, **kw)


class InsufficientStorage(FhirError):
    status = 507
    code = "exception"


class ServiceUnavailable(FhirError):
    status = 503
    code = "transient"

    def __init__(self, diagnostics: str = "The service is temporarily unavailable", **kw: Any):
        headers = kw.pop("headers", None) or {}
        headers.setdefault("Retry-After", "5")
        super().__init__(diagnostics, headers=headers, **kw)


class TransactionConflict(ServiceUnavailable):
    """The database aborted a transaction for a concurrent one (PostgreSQL serialization
    failure or deadlock): nothing was written, and the same transaction may succeed when run
    again; the group writer does so a few times before answering 503."""
