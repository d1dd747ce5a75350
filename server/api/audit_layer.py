"""The audit layer: an ASGI layer outside authentication, so refusals (401, 403, 404 by the
door) are recorded like answers. Each audited request (``audit/capture.py``: reads,
searches, history, operations, refused writes; never ``AuditEvent`` itself, discovery or
the token endpoints) becomes one record, with its principal, purposes of use, network
address, status and the body it answered (parsed by the writer, not here).

In ``sync`` mode the answer is held until its record is committed (``audit/trail.py``); when
the record cannot be written, the database's error is answered instead (503 when it is
unavailable).
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api import handlers
from server.api.authentication import OPEN_PATHS
from server.api.context import principal_of
from server.audit.capture import MAX_BODY, Captured, audited
from server.audit.trail import AuditTrail
from server.errors import FhirError
from server.fhir.instant import now_us

UNAUDITED = ("/fhir/AuditEvent",)


def _skipped(scope: Scope) -> bool:
    path: str = scope["path"]
    return (
        scope["method"] == "OPTIONS"
        or not path.startswith("/fhir")
        or path in OPEN_PATHS
        or path.rstrip("/") in OPEN_PATHS
        or any(path == p or path.startswith(p + "/") or path.startswith(p + "?") for p in UNAUDITED)
    )


class AuditLayer:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        trail: AuditTrail | None = (
            getattr(scope["app"].state, "audit", None) if scope["type"] == "http" else None
        )
        if trail is None or not trail.reads or _skipped(scope):
            await self.app(scope, receive, send)
            return
        sync = trail.mode == "sync"
        held: list[Message] = []
        body = bytearray()
        status = 500
        gzipped = False
        keep = scope["method"] in ("GET", "HEAD", "POST")

        async def capture(message: Message) -> None:
            nonlocal status, gzipped
            if message["type"] == "http.response.start":
                status = int(message["status"])
                gzipped = any(
                    k == b"content-encoding" and b"gzip" in v for k, v in message["headers"]
                )
            elif message["type"] == "http.response.body" and keep and len(body) <= MAX_BODY:
                body.extend(message.get("body", b""))
            if sync:
                held.append(message)
            else:
                await send(message)

        await self.app(scope, receive, capture)
        if not audited(scope["method"], scope["path"], status):
            for message in held:
                await send(message)
            return
        captured = _captured(scope, status, bytes(body) if keep else None, gzipped)
        if sync:
            try:
                await asyncio.to_thread(trail.write, captured)
            except FhirError as error:  # not recorded: not answered (the database's error)
                response = await handlers.fhir_error(Request(scope, receive, send), error)
                await response(scope, receive, send)
                return
            for message in held:
                await send(message)
        else:
            trail.add(captured)


def _captured(scope: Scope, status: int, body: bytes | None, gzipped: bool) -> Captured:
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
