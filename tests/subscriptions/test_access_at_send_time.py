"""A notification is built through the door with the subscriber's rights as of sending: access
lost between the event and its delivery leaves the number and timestamp, never the focus."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.auth.interactions import Interaction
from server.auth.policy import EVERYTHING, NOTHING, Facts, Narrowing
from server.auth.principal import LOCAL, Principal
from server.store.base import ClientRow, State, new_state
from tests.subscriptions.receiver import Receiver, receiver
from tests.subscriptions.test_subscriptions import (
    active,
    kind,
    numbers,
    params,
    subscription,
    task,
    wait_status,
)
from tests.support import Acting, TestClient, create, fhir_client, sqlite_url

PARTNER = Principal("partner-app", organization="Organization/partner")


class Consent:
    """Access the way a revocable consent gives it: all or nothing per principal."""

    def __init__(self) -> None:
        self.granted = {PARTNER.id}

    def narrowing(self, principal: Principal, interaction: Interaction, type: str | None
                  ) -> Narrowing:
        return EVERYTHING if principal.id in self.granted else NOTHING

    def admits(self, principal: Principal, interaction: Interaction, facts: Facts) -> bool:
        return principal.id in self.granted


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as rec:
        yield rec


def test_consent_revoked_before_delivery_gives_a_focus_less_notification(
    tmp_path: Path, hook: Receiver
) -> None:
    consent = Consent()
    acting = Acting()

    def owners(state: State) -> Principal | None:
        return PARTNER if state.owner == PARTNER.id else LOCAL

    with fhir_client(
        sqlite_url(tmp_path / "fhir.db"),
        principals=acting,
        policies=[consent],
        subscription_allow_http_loopback=True,
        subscription_poll_seconds=0.05,
        subscription_backoff_max_seconds=0.2,
    ) as client:
        client.app.state  # noqa: B018
        _run(client, acting, consent, hook, owners)


def _run(client: TestClient, acting: Acting, consent: Consent, hook: Receiver, owners: object
         ) -> None:
    client.app.state.subscriptions._owners = owners
    acting.as_(PARTNER)
    id = active(client, hook, subscription(hook.url, content="full-resource"))
    acting.as_(LOCAL)
    create(client, task())
    hook.wait_for(lambda bs: numbers(bs) == [1])
    first = [b for b in hook.bundles() if kind(b) == "event-notification"][0]
    assert len(first["entry"]) == 2  # visible: focus and resource

    hook.status = 503  # the receiver is down while the next event happens
    create(client, task())
    hook.wait_refused(1)
    consent.granted.clear()  # consent revoked before the delivery
    # an attempt built before the revocation may still be on its way: wait for a later one
    refused = hook.refused
    hook.wait_refused(refused + 2)
    hook.status = 200
    found = hook.wait_for(lambda bs: numbers(bs) == [1, 2])
    last = [b for b in found if kind(b) == "event-notification"][-1]
    assert len(last["entry"]) == 1  # the status only
    parts = params(last)["notification-event"][0]["part"]
    assert {p["name"] for p in parts} == {"event-number", "timestamp"}
    assert id


def test_revoked_client_owns_no_live_subscription(tmp_path: Path) -> None:
    with fhir_client(sqlite_url(tmp_path / "fhir.db")) as client:
        service = client.app.state.subscriptions
        repo = client.app.state.store
        repo.auth.add_client(ClientRow(
            "c1", "Partner", "Organization/p", "system/Task.rs", None,
            "https://p.example/jwks", None, "TREAT", "RS384", "active", 1,
        ))
        state = new_state("s1", "c1", None, None, None, 0, status="active")
        principal = service.registered_owner(state)
        assert principal is not None and principal.organization == "Organization/p"
        repo.auth.revoke("c1")
        assert service.registered_owner(state) is None
        unknown = new_state("s2", "nobody", None, None, None, 0, status="active")
        assert service.registered_owner(unknown) is None


def test_owner_revoked_turns_the_subscription_off(tmp_path: Path, hook: Receiver) -> None:
    revoked: set[str] = set()

    def owners(state: State) -> Principal | None:
        return None if state.owner in revoked else LOCAL

    with fhir_client(
        sqlite_url(tmp_path / "fhir.db"),
        subscription_allow_http_loopback=True,
        subscription_poll_seconds=0.05,
    ) as client:
        client.app.state.subscriptions._owners = owners
        id = active(client, hook, subscription(hook.url))
        revoked.add("local")
        wait_status(client, id, "off")
        status = client.get(f"/fhir/Subscription/{id}/$status").json()
        error = params(status)["error"][0]["valueCodeableConcept"]["text"]
        assert "revoked" in error
