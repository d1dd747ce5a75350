"""Break the glass: emergency treatment access (``ETREAT``) asserted per request.

``ETREAT`` is never an ambient purpose of use. A client is *granted* it by its registration
(``client add --purpose ...,ETREAT``) or, for an external token, by the configured purpose
claim (``CALAIM_FHIR_IDP_PURPOSE_CLAIM``) listing it. A request *asserts* it with the header
``X-Purpose-Of-Use: ETREAT``. Without the header a granted client acts under its other purposes
only; asserting without the grant is refused (403). Either way the request's principal carries
``ETREAT`` among its purposes, so its audit record (``purposeOfEvent``) shows the assertion and
``AuditEvent?purpose=ETREAT`` reports every break-the-glass request, refused ones included.

Break the glass reads: a request asserting it may only be a read (GET, HEAD, a POST
``_search``); any other is refused (403). Reads are what the audit layer records with the
request's purposes, so every break-the-glass request is in the report (a write's record comes
from the outbox, which carries no purposes of use).
"""

from __future__ import annotations

from dataclasses import replace

from server.auth.principal import Principal

HEADER = b"x-purpose-of-use"
ETREAT = "ETREAT"


class NotGranted(Exception):
    """A request asserted emergency access its client was not granted."""


class WriteRefused(Exception):
    """A request asserting break the glass that is not a read."""


class BadAssertion(Exception):
    """A purpose-of-use header naming anything but ``ETREAT``."""


def reads(method: str, path: str) -> bool:
    """Whether a request of ``method`` to ``path`` is a read (what break the glass allows)."""
    return method in ("GET", "HEAD") or (method == "POST" and path.endswith("/_search"))


def asserted(principal: Principal, header: str | None, read: bool = True) -> Principal:
    """The request's principal: its purposes without ``ETREAT`` unless ``header`` asserts it.
    Raises ``NotGranted`` (with the asserting principal as argument, for the audit record)
    when the client was not granted ``ETREAT``, ``WriteRefused`` (the same) when the request
    is not a ``read``, ``BadAssertion`` for any other header value."""
    others = tuple(p for p in principal.purposes if p != ETREAT)
    if header is None:
        return principal if others == principal.purposes else replace(principal, purposes=others)
    if header.strip() != ETREAT:
        raise BadAssertion(f"X-Purpose-Of-Use: only {ETREAT} (break the glass) is asserted")
    breaking = replace(principal, purposes=(*others, ETREAT))
    if ETREAT not in principal.purposes:
        raise NotGranted(breaking)
    if not read:
        raise WriteRefused(breaking)
    return breaking
