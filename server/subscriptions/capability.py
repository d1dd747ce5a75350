"""What the CapabilityStatement says of Subscription: the topics (backport
``capabilitystatement-subscriptiontopic-canonical``, one per topic, ``url|version``), the
backport profile and the gaps (JSON only; rest-hook only)."""

from __future__ import annotations

from typing import Any

from server.subscriptions.spec import BACKPORT, PROFILE
from server.subscriptions.topics import TOPICS

TOPIC_CANONICAL = f"{BACKPORT}/capabilitystatement-subscriptiontopic-canonical"


def subscription_capability() -> dict[str, Any]:
    return {
        "extension": [
            {"url": TOPIC_CANONICAL, "valueCanonical": f"{t.url}|{t.version}"} for t in TOPICS
        ],
        "supportedProfile": [PROFILE],
        "documentation": (
            "Topic-based subscriptions (Subscriptions R5 Backport IG 1.1.0): criteria is one of "
            "the topics in this entry's subscriptiontopic-canonical extensions; filters by the "
            "topic's parameters. Channel rest-hook; payload application/fhir+json "
            "(fhirVersion=4.0) with content empty, id-only or full-resource. Not yet: "
            "application/fhir+xml payloads (Gravity SDOH CC task-5) and the email channel "
            "(Gravity task-2) are refused with 422. channel.header values are write-only. "
            "See docs/subscriptions.md."
        ),
    }
