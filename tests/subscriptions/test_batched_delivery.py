"""Several events in one notification, prompt retries with one-event probes while an endpoint
fails, and one delivery round serving several subscribers without mixing their rights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.auth.interactions import Interaction
from server.auth.policy import EVERYTHING, NOTHING, Facts, Narrowing
from server.auth.principal import LOCAL, Principal
from server.store.sql.subscriptions import State
from server.subscriptions.service import FIRST_RETRY_SECONDS, backoff_us
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_access_at_send_time import PARTNER
from tests.subscriptions.test_subscriptions import (
    BP,
    active,
    kind,
    matched,
    numbers,
    params,
    subscription,
    task,
)
from tests.support import Acting, TestClient, create, fhir_client, sqlite_url

OTHER = Principal("other-app", organization="Organization/other")


class TasksForPartner:
    """PARTNER may see Tasks, OTHER may not; everything else is open to both."""

    def narrowing(self, principal: Principal, interaction: Interaction, type: str | None
                  ) -> Narrowing:
        if type not in ("Task", None) or principal.id != OTHER.id:
            return EVERYTHING
        return NOTHING

    def admits(self, principal: Principal, interaction: Interaction, facts: Facts) -> bool:
        return facts.type != "Task" or principal.id != OTHER.id


def events_of(bundle: dict[str, Any]) -> list[tuple[int, str | None]]:
    """(event-number, focus reference or None) of each notification-event, in order."""
    out = []
    for ev in params(bundle).get("notification-event", []):
        parts = {p["name"]: p for p in ev["part"]}
        focus = parts.get("focus")
        out.append((
            int(parts["event-number"]["valueString"]),
            None if focus is None else focus["valueReference"]["reference"],
        ))
    return out


def test_backoff_first_retry_is_prompt_then_grows_to_the_cap() -> None:
    assert backoff_us(1, 3600, 0.0) == int(FIRST_RETRY_SECONDS / 2 * 1_000_000)
    assert backoff_us(1, 3600, 1.0) == int(FIRST_RETRY_SECONDS * 1_000_000)
    assert backoff_us(2, 3600, 1.0) == 2 * backoff_us(1, 3600, 1.0)
    assert backoff_us(5, 3600, 1.0) == 16 * backoff_us(1, 3600, 1.0)
    assert backoff_us(40, 3600, 1.0) == 3600 * 1_000_000
    assert backoff_us(40, 3600, 0.0) == 1800 * 1_000_000
    assert backoff_us(10_000, 1, 1.0) == 1_000_000


def test_a_backlog_arrives_probe_first_then_max_count_per_notification(
    client: TestClient, hook: Receiver
) -> None:
    body = subscription(hook.url)
    body["channel"]["extension"] = [{"url": f"{BP}/backport-max-count", "valuePositiveInt": 2}]
    id = active(client, hook, body)
    hook.status = 503
    created = [create(client, task()) for _ in range(5)]
    matched(client)
    hook.wait_refused(3)
    hook.status = 200
    found = hook.wait_for(lambda bs: sorted(set(numbers(bs))) == [1, 2, 3, 4, 5])
    # while failing, each attempt after the first was a probe of the first event alone
    with hook.lock:
        rejected = list(hook.rejected)
    assert all(events_of(b)[:1] == events_of(rejected[0])[:1] for b in rejected)
    assert all(len(events_of(b)) == 1 for b in rejected[1:])
    # then the backlog in order, max-count (2) events per notification, none skipped
    notes = [b for b in found if kind(b) == "event-notification"]
    batches = [[n for n, _ in events_of(b)] for b in notes]
    assert batches == [[1], [2, 3], [4, 5]]
    foci = [f for b in notes for _, f in events_of(b)]
    assert foci == [f"http://testserver/fhir/Task/{t['id']}/_history/1" for t in created]
    for b in notes:
        entries = [e["fullUrl"] for e in b["entry"][1:]]
        assert entries == [f for _, f in events_of(b)]
        assert params(b)["events-since-subscription-start"][0]["valueString"] == "5"
    # $events answers the same numbers naming the same versions
    recovered = client.get(
        f"/fhir/Subscription/{id}/$events?eventsSinceNumber=1&eventsUntilNumber=5"
    ).json()
    assert events_of(recovered) == [(n, f) for b in notes for n, f in events_of(b)]


def test_one_round_builds_each_subscribers_payload_with_its_own_rights(
    tmp_path: Path, hook: Receiver
) -> None:
    acting = Acting()
    principals = {PARTNER.id: PARTNER, OTHER.id: OTHER}

    def owners(state: State) -> Principal | None:
        return principals.get(state.owner or "", LOCAL)

    with fhir_client(
        sqlite_url(tmp_path / "fhir.db"),
        principals=acting,
        policies=[TasksForPartner()],
        subscription_allow_http_loopback=True,
        subscription_poll_seconds=0.05,
    ) as client:
        client.app.state.subscriptions._owners = owners
        subscribed = {}
        for who in (PARTNER, OTHER):
            acting.as_(who)
            subscribed[who.id] = active(client, hook, subscription(hook.url))
        acting.as_(LOCAL)
        for _ in range(3):
            create(client, task())

        def per_subscription(bs: list[dict[str, Any]]) -> dict[str, list[tuple[int, str | None]]]:
            out: dict[str, list[tuple[int, str | None]]] = {}
            for b in bs:
                if kind(b) != "event-notification":
                    continue
                ref = params(b)["subscription"][0]["valueReference"]["reference"]
                out.setdefault(ref.rsplit("/", 1)[-1], []).extend(events_of(b))
            return out

        found = hook.wait_for(
            lambda bs: all(len(v) == 3 for v in per_subscription(bs).values())
            and len(per_subscription(bs)) == 2
        )
        got = per_subscription(found)
        seen = got[subscribed[PARTNER.id]]
        hidden = got[subscribed[OTHER.id]]
        assert [n for n, _ in seen] == [1, 2, 3] and all(f is not None for _, f in seen)
        assert hidden == [(1, None), (2, None), (3, None)]
        for b in found:
            if kind(b) == "event-notification":
                ref = params(b)["subscription"][0]["valueReference"]["reference"]
                if ref.endswith(subscribed[OTHER.id]):
                    assert len(b["entry"]) == 1  # the status only: nothing disclosed
