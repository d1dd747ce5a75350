"""A Subscription resource read as the Subscriptions R5 Backport IG 1.1.0 profile states it
(``backport-subscription``), with the refusals of what this server does not do.

``read_spec`` answers a ``Spec`` or raises ``Unprocessable`` naming the element: ``criteria`` a
known topic (``topics.py``), filters (``backport-filter-criteria``, ANDed) on the topic's
parameters only and of its resource type, channel ``rest-hook`` or ``email``, payload
``application/fhir+json`` (a ``fhirVersion`` MIME parameter, when given, must be ``4.0``:
notifications are R4; ``application/fhir+xml`` is refused until the server speaks XML) with
content ``empty``, ``id-only`` or ``full-resource``, heartbeat period, timeout and max count.
An email subscription (``mailto:`` one address; payload ``text/plain`` allowed) is accepted
when the server has an SMTP relay; its messages never carry resource content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from server.errors import FhirError, Unprocessable
from server.search.parse import SearchContext, parse_criteria
from server.search.query import Criteria
from server.subscriptions.topics import Topic, topic

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
FILTER = f"{BACKPORT}/backport-filter-criteria"
CONTENT = f"{BACKPORT}/backport-payload-content"
HEARTBEAT = f"{BACKPORT}/backport-heartbeat-period"
TIMEOUT = f"{BACKPORT}/backport-timeout"
MAX_COUNT = f"{BACKPORT}/backport-max-count"
CHANNEL_TYPE = f"{BACKPORT}/backport-channel-type"
PROFILE = f"{BACKPORT}/backport-subscription"
CONTENTS = ("empty", "id-only", "full-resource")
CHANNELS = ("rest-hook", "email")
CLIENT_STATUSES = ("requested", "off")
MASK = "****"
_MAILBOX = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")


@dataclass(frozen=True, slots=True)
class Spec:
    topic: Topic
    filters: tuple[Criteria, ...]
    channel: str
    endpoint: str
    content: str
    heartbeat: int | None
    timeout: int | None
    max_count: int | None
    end: str | None
    headers: tuple[tuple[str, str], ...]


def _ext(element: dict[str, Any] | None, url: str) -> list[Any]:
    if not isinstance(element, dict):
        return []
    return [e for e in element.get("extension", []) if isinstance(e, dict) and e.get("url") == url]


def _int_ext(channel: dict[str, Any], url: str, key: str, name: str, minimum: int) -> int | None:
    found = _ext(channel, url)
    if not found:
        return None
    value = found[0].get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise Unprocessable(
            f"{name} must be an integer of at least {minimum}",
            expression=f"Subscription.channel.extension('{url}')",
        )
    return value


def header_pairs(channel: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """``channel.header`` as (name, value) pairs; each must read ``Name: value``."""
    pairs = []
    for i, text in enumerate(channel.get("header") or []):
        name, sep, value = str(text).partition(":")
        name = name.strip()
        if not sep or not name or any(c in name for c in " \t\r\n") or "\n" in value:
            raise Unprocessable(
                "A channel header must read 'Name: value' on one line",
                expression=f"Subscription.channel.header[{i}]",
            )
        pairs.append((name, value.strip()))
    return tuple(pairs)


def read_payload(payload: Any) -> None:
    """Refuse a payload MIME type this server cannot send."""
    if not isinstance(payload, str) or not payload.strip():
        raise Unprocessable(
            "channel.payload (a MIME type) is required by the backport profile",
            expression="Subscription.channel.payload",
        )
    mime, *params = (p.strip() for p in payload.split(";"))
    if mime.lower() == "application/fhir+xml":
        raise Unprocessable(
            "application/fhir+xml notifications are not supported yet: this server speaks "
            "JSON only (see the CapabilityStatement); use application/fhir+json",
            expression="Subscription.channel.payload",
        )
    if mime.lower() not in ("application/fhir+json", "application/json"):
        raise Unprocessable(
            f"Unsupported payload type '{mime}': use application/fhir+json",
            expression="Subscription.channel.payload",
        )
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "fhirversion" and value.strip() not in ("4.0", "4.0.1"):
            raise Unprocessable(
                f"fhirVersion={value.strip()} notifications are not supported: this server "
                "sends FHIR R4 (fhirVersion=4.0)",
                expression="Subscription.channel.payload",
            )


def read_filter(found: Topic, text: str, ctx: SearchContext, at: str) -> Criteria:
    """One ``backport-filter-criteria`` value (``Type?param=value&...`` or ``param=value``) as
    criteria on the topic's resource type, using only the topic's filter parameters."""
    type, sep, query = text.partition("?")
    if not sep:
        type, query = found.type, text
    if type != found.type:
        raise Unprocessable(
            f"A filter of topic {found.url} must be on {found.type}, not '{type}'",
            expression=at,
        )
    pairs = parse_qsl(query, keep_blank_values=True)
    if not pairs:
        raise Unprocessable("An empty filter", expression=at)
    for name, _ in pairs:
        base = name.split(":")[0]
        if base not in found.filters:
            raise Unprocessable(
                f"Topic {found.url} cannot be filtered by '{name}' (allowed: "
                f"{', '.join(found.filters)})",
                expression=at,
            )
    try:
        return parse_criteria(found.type, pairs, ctx)
    except FhirError as exc:
        raise Unprocessable(f"Invalid filter: {exc}", expression=at) from exc


def read_spec(resource: dict[str, Any], ctx: SearchContext, email: bool = True) -> Spec:
    """The subscription ``resource`` asks for; raises ``Unprocessable``. ``email``: whether
    the server can send mail (an SMTP relay is configured)."""
    criteria = resource.get("criteria")
    found = topic(criteria) if isinstance(criteria, str) else None
    if found is None:
        raise Unprocessable(
            f"Unknown subscription topic '{criteria}': criteria must be the canonical URL of "
            "one of the topics in the CapabilityStatement",
            expression="Subscription.criteria",
        )
    filters = tuple(
        read_filter(
            found, str(e.get("valueString", "")), ctx, f"Subscription.criteria.extension[{i}]"
        )
        for i, e in enumerate(_ext(resource.get("_criteria"), FILTER))
    )
    channel = resource.get("channel") or {}
    channel_type = channel.get("type")
    custom = _ext(channel.get("_type"), CHANNEL_TYPE)
    if custom:
        code = (custom[0].get("valueCoding") or {}).get("code")
        raise Unprocessable(
            f"Channel type '{code}' is not supported (rest-hook, email)",
            expression="Subscription.channel.type",
        )
    if channel_type not in CHANNELS:
        raise Unprocessable(
            f"Channel type '{channel_type}' is not supported (rest-hook, email)",
            expression="Subscription.channel.type",
        )
    endpoint = channel.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise Unprocessable(
            "channel.endpoint is required", expression="Subscription.channel.endpoint"
        )
    scheme = urlsplit(endpoint).scheme
    if channel_type == "rest-hook" and scheme not in ("https", "http"):
        raise Unprocessable(
            "A rest-hook endpoint must be an https URL", expression="Subscription.channel.endpoint"
        )
    if channel_type == "email":
        if not email:
            raise Unprocessable(
                "The email channel is not configured on this server (no SMTP relay): use rest-hook",
                expression="Subscription.channel.type",
            )
        if scheme != "mailto" or not _MAILBOX.match(endpoint[len("mailto:") :]):
            raise Unprocessable(
                "An email endpoint must be one mailto: address",
                expression="Subscription.channel.endpoint",
            )
    if not (channel_type == "email" and channel.get("payload") == "text/plain"):
        read_payload(channel.get("payload"))
    contents = _ext(channel.get("_payload"), CONTENT)
    content = contents[0].get("valueCode") if contents else None
    if content not in CONTENTS:
        raise Unprocessable(
            "channel.payload needs the backport-payload-content extension: empty, id-only or "
            "full-resource",
            expression="Subscription.channel.payload",
        )
    return Spec(
        topic=found,
        filters=filters,
        channel=channel_type,
        endpoint=endpoint,
        content=content,
        heartbeat=_int_ext(channel, HEARTBEAT, "valueUnsignedInt", "The heartbeat period", 1),
        timeout=_int_ext(channel, TIMEOUT, "valueUnsignedInt", "The timeout", 1),
        max_count=_int_ext(channel, MAX_COUNT, "valuePositiveInt", "The max count", 1),
        end=resource.get("end"),
        headers=header_pairs(channel),
    )
