"""``Subscription/$status`` and ``Subscription/[id]/$events`` (Subscriptions Backport IG 1.1.0),
and ``Subscription/[id]/$signing-key`` (ours: the HMAC key of its notifications).

Both read the subscription through the door (a Subscription the caller may not read is a 404)
and answer a Bundle of ``subscription-status`` Parameters: ``$status`` one per subscription
(``query-status``: status, events since the start, the last delivery error); ``$events`` the
numbered events from ``eventsSinceNumber`` to ``eventsUntilNumber`` (both inclusive; at most
``MAX_EVENTS``) with the payload ``content`` asked for (default: the subscription's), each
focus as the *caller* may see it now: an event whose resource it may not read keeps its
number and timestamp and nothing else. Events are kept ``subscription_event_retention_days``.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from server.api import http
from server.api import paths as _paths  # noqa: F401 - registers the fhirid path convertor
from server.api.context import note, repository, settings_of
from server.auth.interactions import Interaction
from server.errors import Forbidden, InvalidResource, NotFound
from server.fhir.instant import now_us
from server.ports import Reader
from server.store.base import State, Subscriptions
from server.subscriptions.notifications import (
    notification_bundle,
    seen_through,
    status_parameters,
)
from server.subscriptions.service import SIGNATURE_HEADER
from server.subscriptions.spec import CONTENTS

router = APIRouter()
MAX_EVENTS = 1000


def _store(request: Request) -> Subscriptions:
    store: Subscriptions = request.app.state.store.subscriptions
    return store


async def _params(request: Request) -> dict[str, str]:
    """Query parameters, and for a POST the Parameters body's simple values."""
    out = dict(request.query_params)
    if request.method == "POST":
        body = await request.body()
        if body:
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise InvalidResource("The body is not JSON") from exc
            if not isinstance(parsed, dict) or parsed.get("resourceType") != "Parameters":
                raise InvalidResource("The body must be a Parameters resource")
            for p in parsed.get("parameter") or []:
                for key, value in p.items():
                    if key.startswith("value"):
                        out[str(p.get("name"))] = str(value)
    return out


def _number(params: dict[str, str], name: str) -> int | None:
    text = params.get(name)
    if text is None:
        return None
    if not text.isdigit():
        raise InvalidResource(f"{name} must be a non-negative integer", expression=name)
    return int(text)


def _status_entry(
    request: Request, id: str, body: dict[str, Any], state: State | None
) -> dict[str, Any]:
    base = settings_of(request).fhir_base
    status = state.status if state is not None else str(body.get("status"))
    error = state.last_error if state is not None and status in ("error", "off") else None
    if state is not None and status == "active" and state.failing_since is not None:
        error = state.last_error
    parameters = status_parameters(
        base,
        id,
        str(body.get("criteria")),
        status,
        "query-status",
        0 if state is None else state.events,
        [],
        "id-only",
        error,
    )
    return {"fullUrl": f"urn:uuid:status-{id}", "resource": parameters, "search": {"mode": "match"}}


async def _visible(request: Request, id: str) -> dict[str, Any]:
    repo = repository(request)

    def read(reader: Reader) -> bytes | None:
        found = reader.read("Subscription", id)
        return None if found is None or found.body is None else found.body

    body = await repo.reading(read)
    if body is None:
        raise NotFound(f"Subscription/{id} is not known")
    parsed: dict[str, Any] = orjson.loads(body)
    return parsed


def _bundle(entries: list[dict[str, Any]], indent: bool) -> Response:
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(entries),
        "entry": entries,
    }
    return Response(http.dump(bundle, indent), media_type=http.FHIR_JSON)


async def status_all(request: Request) -> Response:
    note(request, "operation", "Subscription", None)
    http.check_accept(request)
    params = await _params(request)
    wanted_ids = [i for i in (params.get("id") or "").split(",") if i]
    wanted_status = {s for s in (params.get("status") or "").split(",") if s}
    store = _store(request)
    states = {s.id: s for s in await asyncio.to_thread(store.states)}
    entries = []
    for id in wanted_ids or sorted(states):
        try:
            body = await _visible(request, id)
        except NotFound:
            continue
        state = states.get(id)
        entry = _status_entry(request, id, body, state)
        code = entry["resource"]["parameter"][2]["valueCode"]
        if not wanted_status or code in wanted_status:
            entries.append(entry)
    return _bundle(entries, http.pretty(request))


async def status_one(request: Request) -> Response:
    id = request.path_params["id"]
    note(request, "operation", "Subscription", id)
    http.check_accept(request)
    body = await _visible(request, id)
    state = await asyncio.to_thread(_store(request).state, id)
    return _bundle([_status_entry(request, id, body, state)], http.pretty(request))


async def events(request: Request) -> Response:
    id = request.path_params["id"]
    note(request, "operation", "Subscription", id)
    http.check_accept(request)
    params = await _params(request)
    body = await _visible(request, id)
    since = _number(params, "eventsSinceNumber") or 1
    until = _number(params, "eventsUntilNumber")
    content = params.get("content")
    if content is not None and content not in CONTENTS:
        raise InvalidResource(f"content must be one of {', '.join(CONTENTS)}", expression="content")
    store = _store(request)
    state = await asyncio.to_thread(store.state, id)
    if state is None:
        raise NotFound(f"Subscription/{id} has no events yet")
    numbered = await asyncio.to_thread(store.events, id, since - 1, until, MAX_EVENTS)
    repo = repository(request)
    seen = await repo.reading(lambda reader: seen_through(reader, numbered))
    base = settings_of(request).fhir_base
    chosen = content or _content(body)
    parameters = status_parameters(
        base,
        id,
        str(body.get("criteria")),
        state.status,
        "query-event",
        state.events,
        seen,
        chosen,
    )
    bundle = notification_bundle(base, parameters, seen, chosen, now_us())
    # the events' parts are spliced JSON text: indented, when asked, after serialising
    text = http.reformat(orjson.dumps(bundle), http.pretty(request))
    return Response(text, media_type=http.FHIR_JSON)


@router.post(
    "/Subscription/{id:fhirid}/$signing-key",
    operation_id="subscriptionSigningKey",
    summary="A new HMAC signing key for a subscription's notifications (shown once)",
)
async def signing_key(request: Request) -> Response:
    """A new key replaces the old one at once; it is answered here only, never again. The
    caller must be allowed to update the Subscription."""
    id = request.path_params["id"]
    note(request, "operation", "Subscription", id)
    http.check_accept(request)
    repo = repository(request)
    if not repo.access.narrowing(Interaction.UPDATE, "Subscription").permitted:
        raise Forbidden("Not permitted: update on Subscription")
    await _visible(request, id)
    key = secrets.token_urlsafe(32)
    await asyncio.to_thread(_store(request).set_signing_key, id, key, now_us())
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "key", "valueString": key},
            {"name": "algorithm", "valueCode": "HMAC-SHA256"},
            {"name": "header", "valueString": SIGNATURE_HEADER},
        ],
    }
    return Response(
        http.dump(parameters, http.pretty(request)),
        media_type=http.FHIR_JSON,
        headers={"Cache-Control": "no-store"},
    )


def _content(body: dict[str, Any]) -> str:
    payload = (body.get("channel") or {}).get("_payload") or {}
    for ext in payload.get("extension") or []:
        if isinstance(ext, dict) and str(ext.get("url", "")).endswith("backport-payload-content"):
            value = ext.get("valueCode")
            if value in CONTENTS:
                return str(value)
    return "id-only"


for _method in ("GET", "POST"):
    router.add_api_route(
        "/Subscription/$status",
        status_all,
        methods=[_method],
        operation_id=f"subscriptionsStatus{_method.title()}",
        summary="The status of the caller's subscriptions (Backport $status)",
    )
    router.add_api_route(
        "/Subscription/{id:fhirid}/$status",
        status_one,
        methods=[_method],
        operation_id=f"subscriptionStatus{_method.title()}",
        summary="The status of one subscription (Backport $status)",
    )
    router.add_api_route(
        "/Subscription/{id:fhirid}/$events",
        events,
        methods=[_method],
        operation_id=f"subscriptionEvents{_method.title()}",
        summary="Past notification events of a subscription (Backport $events)",
    )
