"""The email channel against a local SMTP sink (aiosmtpd on 127.0.0.1): handshake, event
notices that carry no health information, and retries while the relay is down."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.subscriptions.test_subscriptions import BP, TASK_TOPIC, wait_status
from tests.support import create, expressions, fhir_client, outcome, sqlite_url


class Sink:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append((envelope.rcpt_tos, parsed))
        return "250 OK"

    def wait(self, count: int, seconds: float = 20.0) -> list[Any]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if len(self.messages) >= count:
                return self.messages
            time.sleep(0.02)
        raise AssertionError(f"{len(self.messages)} messages after {seconds}s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int]]:
    handler = Sink()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def email_subscription(address: str = "care-team@cbo.example.org") -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "email",
        "criteria": TASK_TOPIC,
        "channel": {
            "type": "email",
            "endpoint": f"mailto:{address}",
            "payload": "text/plain",
            "_payload": {"extension": [{"url": f"{BP}/backport-payload-content",
                                        "valueCode": "empty"}]},
        },
    }


def test_email_notices_carry_no_content(tmp_path: Path, sink: tuple[Sink, int]) -> None:
    handler, port = sink
    with fhir_client(
        sqlite_url(tmp_path / "fhir.db"),
        smtp_host="127.0.0.1",
        smtp_port=port,
        subscription_poll_seconds=0.05,
    ) as client:
        statement = client.get("/fhir/metadata").json()
        entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription")
        assert "email" in entry["documentation"]
        sub = create(client, email_subscription())
        handler.wait(1)
        wait_status(client, sub["id"], "active")
        rcpt, hello = handler.messages[0]
        assert rcpt == ["care-team@cbo.example.org"]
        assert hello["Subject"] == "Subscription set up"
        task = create(client, {"resourceType": "Task", "status": "requested", "intent": "order",
                               "owner": {"reference": "Organization/secret-owner"},
                               "description": "Housing navigation for Jane Roe"})
        _, notice = handler.wait(2)[1]
        text = notice.get_content()
        assert notice["Subject"] == "Updated content is available"
        assert "eventsSinceNumber=1" in text
        for private in (task["id"], "secret-owner", "Jane", "Housing", "Task"):
            assert private not in text


def test_email_refused_without_a_relay(tmp_path: Path) -> None:
    with fhir_client(sqlite_url(tmp_path / "fhir.db")) as client:
        response = client.post("/fhir/Subscription", json=email_subscription())
        assert "Subscription.channel.type" in expressions(outcome(response, 422))


def test_email_address_checked(tmp_path: Path, sink: tuple[Sink, int]) -> None:
    _, port = sink
    with fhir_client(sqlite_url(tmp_path / "fhir.db"), smtp_host="127.0.0.1", smtp_port=port
                     ) as client:
        body = email_subscription("a@b.org,c@d.org")
        response = client.post("/fhir/Subscription", json=body)
        assert "Subscription.channel.endpoint" in expressions(outcome(response, 422))
