"""What ``calaim-fhir subscriptions`` prints: each subscription's state, lag and last error."""

from __future__ import annotations

from typing import Any

from server.fhir.instant import format_instant
from server.store.base import State, Subscriptions


def summary(state: State) -> dict[str, Any]:
    """One subscription: ``lag`` is the numbered events its endpoint has not acknowledged."""
    return {
        "id": state.id,
        "status": state.status,
        "owner": state.owner,
        "endpoint": state.endpoint,
        "events": state.events,
        "delivered": state.delivered,
        "lag": state.events - state.delivered,
        "handshake_due": state.handshake,
        "attempts": state.attempts,
        "failing_since": None
        if state.failing_since is None
        else format_instant(state.failing_since),
        "next_attempt": format_instant(state.next_attempt) if state.attempts else None,
        "last_sent": None if state.last_sent is None else format_instant(state.last_sent),
        "last_error": state.last_error,
    }


def report(store: Subscriptions) -> tuple[list[dict[str, Any]], int]:
    """Every subscription's summary, and the outbox events the matcher has not read yet."""
    return [summary(s) for s in store.states()], store.lag()
