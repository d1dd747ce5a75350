"""Subscription topics as definition data (R4 has no SubscriptionTopic resource).

A topic names its resource type, its triggers (create, update, delete), an optional condition
on the event's own version (``current``) and on the version it replaced (``previous``), what a
missing version counts as (a create has no previous version, a delete no current one) and the
search parameters a subscription may filter by. The server advertises every topic in its
CapabilityStatement (``capabilitystatement-subscriptiontopic-canonical``); a Subscription
names one by its canonical URL in ``criteria``. Clients cannot define topics.

Gravity SDOH Clinical Care defines the Task and ServiceRequest topics (standards.md §1.11; the
topic version is the IG's); ours name program events the server's own lifecycle writes.
"""

from __future__ import annotations

from dataclasses import dataclass

GRAVITY = "http://hl7.org/fhir/us/sdoh-clinicalcare/SubscriptionTopic"
GRAVITY_VERSION = "2.3.0"
OURS = "http://calaim-fhir.org/fhir/SubscriptionTopic"
OURS_VERSION = "0.1.0"
TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"
NOTICE_PROFILE = "http://calaim-fhir.org/fhir/StructureDefinition/ecm-notice"
WORKFLOW = "http://calaim-fhir.org/fhir/CodeSystem/ecm-referral-workflow"


@dataclass(frozen=True, slots=True)
class Topic:
    """``triggers``: the interactions that may notify (``update`` covers patch). ``current``
    and ``previous``: search criteria (a query string on ``type``) the event's version and the
    version before it must satisfy (None: no condition). ``no_previous``: whether a missing
    previous version (a create) passes ``previous``; ``deleted``: whether a deletion passes
    ``current``. ``filters``: the search parameters a subscription may filter by."""

    url: str
    version: str
    title: str
    type: str
    triggers: frozenset[str]
    filters: tuple[str, ...]
    current: str | None = None
    previous: str | None = None
    no_previous: bool = True
    deleted: bool = True
    description: str = ""


TOPICS: tuple[Topic, ...] = (
    Topic(
        url=f"{GRAVITY}/Task",
        version=GRAVITY_VERSION,
        title="Gravity SDOH CC: Task",
        type="Task",
        triggers=frozenset({"create", "update", "delete"}),
        filters=("_lastUpdated", "code", "owner", "requester", "status"),
        current="status:not=draft&intent=order",
        description="A Task (not a draft, intent order) was created, changed or deleted.",
    ),
    Topic(
        url=f"{GRAVITY}/Servicerequest",
        version=GRAVITY_VERSION,
        title="Gravity SDOH CC: ServiceRequest",
        type="ServiceRequest",
        triggers=frozenset({"update", "delete"}),
        filters=("_lastUpdated", "_id"),
        description="A ServiceRequest was changed or deleted.",
    ),
    Topic(
        url=f"{OURS}/referral-received",
        version=OURS_VERSION,
        title="Referral received",
        type="Task",
        triggers=frozenset({"create", "update"}),
        filters=("owner", "requester", "code"),
        current=f"code={TASK_CODE}|fulfill&status=requested",
        previous="status:not=requested",
        deleted=False,
        description="A referral Task (code fulfill) reached status requested.",
    ),
    Topic(
        url=f"{OURS}/loop-closed",
        version=OURS_VERSION,
        title="Referral loop closed",
        type="Task",
        triggers=frozenset({"create", "update"}),
        filters=("owner", "requester", "code"),
        current=f"code={TASK_CODE}|fulfill&status=completed",
        previous="status:not=completed",
        deleted=False,
        description=(
            "A referral Task (code fulfill) was completed: the loop is closed. A referral "
            "recorded already completed (its earlier steps happened elsewhere) notifies too."
        ),
    ),
    Topic(
        url=f"{OURS}/assignment-made",
        version=OURS_VERSION,
        title="Assignment made",
        type="Task",
        triggers=frozenset({"create"}),
        filters=("owner", "requester", "patient"),
        current=f"code={TASK_CODE}|fulfill&status=requested&part-of:missing=false",
        deleted=False,
        description=(
            "A referral Task (code fulfill) was created requested and partOf another Task: "
            "an ECM provider assignment ($ecm-assign: the provider's Task under the plan's, "
            "owner the provider) or a coordination platform's sub-referral (the same shape)."
        ),
    ),
    Topic(
        url=f"{OURS}/enrollment-started",
        version=OURS_VERSION,
        title="Enrollment started",
        type="EpisodeOfCare",
        triggers=frozenset({"create", "update"}),
        filters=("patient", "organization"),
        current="status=active",
        previous="status:not=active",
        deleted=False,
        description="An EpisodeOfCare (program enrollment) became active.",
    ),
    Topic(
        url=f"{OURS}/enrollment-ended",
        version=OURS_VERSION,
        title="Enrollment ended",
        type="EpisodeOfCare",
        triggers=frozenset({"create", "update"}),
        filters=("patient", "organization"),
        current="status=finished",
        previous="status:not=finished",
        deleted=False,
        description=(
            "An EpisodeOfCare (program enrollment) was finished, or recorded already finished."
        ),
    ),
    Topic(
        url=f"{OURS}/referral-notice",
        version=OURS_VERSION,
        title="Referral notice",
        type="Communication",
        triggers=frozenset({"create"}),
        filters=("recipient", "patient"),
        current=f"_profile={NOTICE_PROFILE}",
        deleted=False,
        description=(
            "An ecm-notice Communication was created (a referral authorized, not authorized or "
            "closed; an assignment; a discontinuation)."
        ),
    ),
    Topic(
        url=f"{OURS}/notice-of-action",
        version=OURS_VERSION,
        title="Notice of Action",
        type="DocumentReference",
        triggers=frozenset({"create"}),
        filters=("patient", "subject"),
        current=f"type={WORKFLOW}|notice-of-action",
        deleted=False,
        description=(
            "A Notice of Action was written (a member's ECM enrollment ended: the notice text "
            "with the member's appeal rights)."
        ),
    ),
)

_BY_URL = {topic.url: topic for topic in TOPICS}


def topic(url: str) -> Topic | None:
    """The topic of a canonical URL (``url`` or ``url|version`` with the topic's version)."""
    base, _, version = url.partition("|")
    found = _BY_URL.get(base)
    if found is None or (version and version != found.version):
        return None
    return found
