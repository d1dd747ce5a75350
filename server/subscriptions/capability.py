"""What the CapabilityStatement says of Subscription: the topics (backport
``capabilitystatement-subscriptiontopic-canonical``, one per topic, ``url|version``), the
backport profile and the gaps (JSON only; email only with an SMTP relay)."""

from __future__ import annotations

from typing import Any

from server.subscriptions.spec import BACKPORT, PROFILE
from server.subscriptions.topics import TOPICS

TOPIC_CANONICAL = f"{BACKPORT}/capabilitystatement-subscriptiontopic-canonical"
OPERATIONS = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition"


def subscription_capability(email: bool) -> dict[str, Any]:
    """``email``: whether an SMTP relay is configured (the email channel is offered)."""
    channels = "rest-hook and email (no content in the message)" if email else "rest-hook"
    gap = "" if email else " and the email channel (Gravity task-2: no SMTP relay configured)"
    return {
        "extension": [
            {"url": TOPIC_CANONICAL, "valueCanonical": f"{t.url}|{t.version}"} for t in TOPICS
        ],
        "supportedProfile": [PROFILE],
        "operation": [
            {"name": "status", "definition": f"{OPERATIONS}/backport-subscription-status"},
            {"name": "events", "definition": f"{OPERATIONS}/backport-subscription-events"},
        ],
        "documentation": (
            "Topic-based subscriptions (Subscriptions R5 Backport IG 1.1.0): criteria is one of "
            "the topics in this entry's subscriptiontopic-canonical extensions; filters by the "
            f"topic's parameters. Channels: {channels}; payload application/fhir+json "
            "(fhirVersion=4.0) with content empty, id-only or full-resource. Not yet: "
            f"application/fhir+xml payloads (Gravity SDOH CC task-5){gap} are refused with "
            "422. channel.header values are write-only. See docs/subscriptions.md."
        ),
    }
