"""What the edge (``edge.py``) records of a request for the audit trail. The edge captures
the answer outside authentication, so refusals (401, 403, 404 by the door) are recorded like
answers. Each audited request (``audit/capture.py``: reads, searches, history, operations,
refused writes; never ``AuditEvent`` itself, discovery or the token endpoints) becomes one
record, with its principal, purposes of use, network
address, status and the body it answered (before gzip, which the transfer layer hands along
with the compressed body; parsed by the writer, not here).

In ``sync`` mode the answer is held until its record is committed (``audit/trail.py``); when
the record cannot be written, the database's error is answered instead (503 when it is
unavailable).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Scope

from server.api.authentication import OPEN_PATHS
from server.api.context import principal_of
from server.audit.capture import Captured
from server.errors import FhirError
from server.fhir.instant import now_us

UNAUDITED = ("/fhir/AuditEvent",)


def skipped(scope: Scope) -> bool:
    """Whether the request is never audited (preflights, discovery, the audit trail itself)."""
    path: str = scope["path"]
    return (
        scope["method"] == "OPTIONS"
        or not path.startswith("/fhir")
        or path in OPEN_PATHS
        or path.rstrip("/") in OPEN_PATHS
        or any(path == p or path.startswith(p + "/") or path.startswith(p + "?") for p in UNAUDITED)
    )


def captured(scope: Scope, status: int, body: bytes | None, gzipped: bool) -> Captured:
    """The audit record of an answered request."""
    who: tuple[str | None, str | None, str | None, tuple[str, ...]]
    try:
        principal = principal_of(Request(scope))
        who = (principal.id, principal.organization, principal.user, principal.purposes)
    except FhirError:  # no valid token (401): nobody known
        who = (None, None, None, ())
    client = scope.get("client")
    return Captured(
        recorded=now_us(),
        method=scope["method"],
        path=scope["path"],
        query=scope.get("query_string", b"").decode("latin-1"),
        status=status,
        client=who[0],
        organization=who[1],
        user=who[2],
        purposes=tuple(who[3]),
        address=str(client[0]) if client else None,
        request_id=scope.get("calaim.request_id"),
        body=body,
        gzipped=gzipped,
    )
