"""The Subscription write rule: the backport profile's checks, the status a client may set and
the write-only channel headers.

- Every create, update and patch of a Subscription is read by ``spec.read_spec`` (unknown
  topic, filters, channel, payload, ``fhirVersion``, XML: 422 naming the element).
- A client may set ``status`` only to ``requested`` or ``off`` (or leave it as stored); the
  server moves ``requested → active`` after a handshake and ``active → error`` when delivery
  keeps failing (``delivery.py``). A new endpoint, channel or payload asks for a new handshake:
  the stored status becomes ``requested``.
- ``channel.header`` values are write-only: the values are kept in ``subscription_secret``
  under a fresh token, the stored Subscription holds ``Name: ****`` and the token (extension
  ``SECRET``). A header sent back as ``Name: ****`` keeps the stored value. The secret is
  written before the resource, outside the unit (``prepare``): a failed write leaves an unused
  secret, never a Subscription without its headers. Writes that skip ``prepare`` (Bundle
  entries, conditional updates) may not carry new header values.
"""

from __future__ import annotations

import copy
import secrets
from typing import Any

import orjson

from server.errors import Unprocessable
from server.fhir.instant import now_us
from server.ports import Version
from server.search.parse import SearchContext
from server.store.sql.subscriptions import SqlSubscriptions
from server.subscriptions.spec import CLIENT_STATUSES, MASK, header_pairs, read_spec
from server.writes.rules import ALLOW, Change, Rule, Verdict, amend, refuse
from server.writes.write import Write

SECRET = "http://calaim-fhir.org/fhir/StructureDefinition/subscription-header-secret"
_HANDSHAKE_KEYS = ("type", "endpoint", "payload", "_payload")


def secret_token(resource: dict[str, Any]) -> str | None:
    for ext in (resource.get("channel") or {}).get("extension", []):
        if isinstance(ext, dict) and ext.get("url") == SECRET:
            value = ext.get("valueString")
            return value if isinstance(value, str) else None
    return None


def _body(stored: Version | None) -> dict[str, Any] | None:
    if stored is None or stored.body is None:
        return None
    body: dict[str, Any] = orjson.loads(stored.body)
    return body


def _without_secret(channel: dict[str, Any]) -> list[Any]:
    return [
        e
        for e in channel.get("extension", [])
        if not (isinstance(e, dict) and e.get("url") == SECRET)
    ]


class SubscriptionRule(Rule):
    name = "subscription"
    types = frozenset({"Subscription"})

    def __init__(self, store: SqlSubscriptions, search: SearchContext, email: bool = False) -> None:
        self._store = store
        self._search = search
        self._email = email

    def _status(self, resource: dict[str, Any], previous: dict[str, Any] | None) -> str:
        status = resource.get("status")
        before = None if previous is None else previous.get("status")
        if status not in CLIENT_STATUSES and status != before:
            raise Unprocessable(
                f"A client may set a Subscription's status only to requested or off, not "
                f"'{status}': the server sets active and error",
                expression="Subscription.status",
            )
        if previous is not None and status != "off":
            was = previous.get("channel") or {}
            now = resource.get("channel") or {}
            if any(was.get(k) != now.get(k) for k in _HANDSHAKE_KEYS):
                return "requested"  # a new endpoint or payload: handshake again
        return str(status)

    def prepare(
        self, write: Write, resource: dict[str, Any], stored: Version | None
    ) -> dict[str, Any] | None:
        read_spec(resource, self._search, self._email)
        previous = _body(stored)
        out = copy.deepcopy(resource)
        out["status"] = self._status(resource, previous)
        channel = out.setdefault("channel", {})
        pairs = header_pairs(channel)
        kept = _kept_headers(previous, self._store)
        values: list[tuple[str, str]] = []
        for i, (name, value) in enumerate(pairs):
            if value == MASK:
                if name not in kept:
                    raise Unprocessable(
                        f"Header '{name}' is masked but no value is stored for it",
                        expression=f"Subscription.channel.header[{i}]",
                    )
                values.append((name, kept[name]))
            else:
                values.append((name, value))
        rest = _without_secret(channel)
        if values:
            token = secrets.token_urlsafe(24)
            self._store.put_secret(token, values, now_us())
            channel["header"] = [f"{name}: {MASK}" for name, _ in values]
            rest.append({"url": SECRET, "valueString": token})
        else:
            channel.pop("header", None)
        if rest:
            channel["extension"] = rest
        else:
            channel.pop("extension", None)
        return out

    def check(self, change: Change) -> Verdict:
        if change.next is None:
            return ALLOW
        resource = change.next
        read_spec(resource, self._search, self._email)
        previous = change.previous
        status = self._status(resource, previous)
        channel = resource.get("channel") or {}
        pairs = header_pairs(channel)
        token = secret_token(resource)
        stored_token = None if previous is None else secret_token(previous)
        if any(value != MASK for _, value in pairs) or (pairs and token != stored_token):
            if not change.prepared:
                return refuse(
                    Unprocessable(
                        "channel.header values can be set only by a create, update or patch "
                        "of the Subscription itself (not in a Bundle or a conditional update)",
                        expression=f"{change.root}.channel.header",
                    )
                )
        elif token is not None and not pairs:
            return refuse(
                Unprocessable(
                    "A header secret without headers", expression=f"{change.root}.channel"
                )
            )
        if status != resource.get("status"):
            return amend({**resource, "status": status})
        return ALLOW


def _kept_headers(previous: dict[str, Any] | None, store: SqlSubscriptions) -> dict[str, str]:
    token = None if previous is None else secret_token(previous)
    if token is None:
        return {}
    return dict(store.secret(token) or [])
