"""Care relationships as access-grant rows: what a version of a relationship resource grants.

Every write of a Coverage, EpisodeOfCare, CareTeam, Task or ServiceRequest replaces the grant
rows of its source resource, in the write's own transaction (``store/sql/adapter.py``), so a
new referral grants access and an ended relationship removes it on the next request, on every
worker; ``calaim-fhir reindex`` rebuilds them all. The relationship policy
(``relationships.py``) narrows through these rows (``GrantClause``).

A row: ``(member, organization, kind, period_start, period_end, scope_type, scope_id)``.
``member`` is the Patient id, ``organization`` the reference ``Organization/<id>``, ``kind``
one of ``KINDS``, the period in µs (None: open; ``period_end`` exclusive), and the scope
empty for a relationship with the member (the kind's data classes of every resource of the
member) or naming the one resource it reaches (a referral, its supporting information).

- Coverage (member: ``beneficiary``): while ``status`` is active, within ``period``; each
  ``payor`` Organization: ``plan``;
- EpisodeOfCare (``patient``): active or onhold, within ``period``; the
  ``managingOrganization``: ``ecm-provider``;
- CareTeam (``subject`` Patient): active, within ``period``; every Organization among
  ``participant.member``, ``participant.onBehalfOf`` and ``managingOrganization``:
  ``care-team``;
- Task (``for`` Patient): while open; a terminal one (completed, cancelled, failed, rejected)
  ends at its ``lastModified`` (else at the write), the policy's grace period after that;
  the ``owner`` Organization: ``referral-owner``, the ``requester``: ``referral-requester``;
- Consent (``patient``): while active (inactive and rejected withdraw it), each provision's
  actors (none: ``*``, everyone): ``roi-permit`` or ``roi-deny``, and ``roi-part2`` for a
  permit whose ``securityLabel`` carries 42 CFR Part 2 (v3-ActCode ``42CFRPart2`` or
  ``SUD``) and names the recipient (read by the policy's consent conditions, not a
  relationship);
- ServiceRequest (``subject`` Patient): draft, active, on-hold; completed or revoked ends at
  the write; each ``performer`` Organization: ``referral-owner``, the ``requester``:
  ``referral-requester``.

A referral's rows reach the member (its kind's classes: demographics and consent by default)
and, scoped, the Task or ServiceRequest itself, what a Task's ``focus``/``basedOn`` name, and
a ServiceRequest's ``supportingInfo`` (an owner only; for a Task, of the ServiceRequests it
names as stored at the Task's write). ``entered-in-error`` grants nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC
from typing import Any

import orjson

from server.fhir.instant import date_range, parse_fhir_range
from server.fhir.references import local_target

Grant = tuple[str, str, str, int | None, int | None, str, str]
Read = Callable[[str, str], dict[str, Any] | None]  # the stored resource (None: absent)

KINDS = ("plan", "ecm-provider", "care-team", "referral-owner", "referral-requester")
RELATIONSHIP_TYPES = frozenset({"Coverage", "EpisodeOfCare", "CareTeam", "Task", "ServiceRequest"})
SOURCE_TYPES = RELATIONSHIP_TYPES | {"Consent"}
#: the release-of-information rows of a member's active Consents: a permit of the actor
#: (``*``: of everyone), a deny ("share nothing"), a permit naming the recipient for 42 CFR
#: Part 2 data
ROI_PERMIT, ROI_DENY, ROI_PART2 = "roi-permit", "roi-deny", "roi-part2"
EVERYONE = "*"
PART2_LABELS = frozenset(
    {
        ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "42CFRPart2"),
        ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "SUD"),
    }
)

_TASK_TERMINAL = frozenset({"completed", "cancelled", "failed", "rejected"})
_SR_OPEN = frozenset({"draft", "active", "on-hold"})
_SR_TERMINAL = frozenset({"completed", "revoked"})


def _local(ref: Any, type: str) -> str | None:
    """The id of a local ``type/<id>`` reference (a Reference element), else None."""
    if not isinstance(ref, dict):
        return None
    text = ref.get("reference")
    target = local_target(text) if isinstance(text, str) else None
    return target[1] if target is not None and target[0] == type else None


def _refs(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return [value] if isinstance(value, dict) else []


def _keys(value: Any) -> Iterator[tuple[str, str]]:
    """``(type, id)`` of the local relative references among ``value``'s Reference elements."""
    for ref in _refs(value):
        text = ref.get("reference")
        if isinstance(text, str) and text.count("/") == 1 and not text.startswith("#"):
            type, _, id = text.partition("/")
            if type[:1].isupper() and id:
                yield type, id


def _period(value: Any) -> tuple[int | None, int | None]:
    """A Period as ``[start, end)`` in µs (an end date reaches the end of its day, UTC)."""
    if not isinstance(value, dict):
        return None, None
    start = value.get("start")
    end = value.get("end")
    low = date_range(start, UTC) if isinstance(start, str) else None
    high = date_range(end, UTC) if isinstance(end, str) else None
    return (None if low is None else low[0]), (None if high is None else high[1])


def _orgs(*values: Any) -> list[str]:
    found: list[str] = []
    for value in values:
        for ref in _refs(value):
            id = _local(ref, "Organization")
            if id is not None and f"Organization/{id}" not in found:
                found.append(f"Organization/{id}")
    return found


def grants(type: str, id: str, resource: dict[str, Any], stamp: int, read: Read) -> list[Grant]:
    """The grant rows of one version of ``type/id`` (``stamp``: its write's time, µs)."""
    if type == "Coverage":
        return _coverage(resource)
    if type == "EpisodeOfCare":
        return _episode(resource)
    if type == "CareTeam":
        return _care_team(resource)
    if type == "Task":
        return _task(id, resource, stamp, read)
    if type == "ServiceRequest":
        return _service_request(id, resource, stamp)
    if type == "Consent":
        return _consent(resource)
    return []


def _member_rows(
    member: str | None, orgs: list[str], kind: str, period: tuple[int | None, int | None]
) -> list[Grant]:
    if member is None:
        return []
    return [(member, org, kind, period[0], period[1], "", "") for org in orgs]


def _coverage(resource: dict[str, Any]) -> list[Grant]:
    if resource.get("status") != "active":
        return []
    member = _local(resource.get("beneficiary"), "Patient")
    orgs = _orgs(resource.get("payor"))
    return _member_rows(member, orgs, "plan", _period(resource.get("period")))


def _episode(resource: dict[str, Any]) -> list[Grant]:
    if resource.get("status") not in ("active", "onhold"):
        return []
    member = _local(resource.get("patient"), "Patient")
    orgs = _orgs(resource.get("managingOrganization"))
    return _member_rows(member, orgs, "ecm-provider", _period(resource.get("period")))


def _care_team(resource: dict[str, Any]) -> list[Grant]:
    if resource.get("status") != "active":
        return []
    member = _local(resource.get("subject"), "Patient")
    participants = _refs(resource.get("participant"))
    orgs = _orgs(
        [p.get("member") for p in participants if isinstance(p.get("member"), dict)],
        [p.get("onBehalfOf") for p in participants if isinstance(p.get("onBehalfOf"), dict)],
        resource.get("managingOrganization"),
    )
    return _member_rows(member, orgs, "care-team", _period(resource.get("period")))


def _referral(
    member: str,
    own: tuple[str, str],
    owners: list[str],
    requesters: list[str],
    end: int | None,
    named: list[tuple[str, str]],
    supporting: list[tuple[str, str]],
) -> list[Grant]:
    rows: list[Grant] = []
    for kind, orgs, reach in (
        ("referral-owner", owners, [own, *named, *supporting]),
        ("referral-requester", requesters, [own, *named]),
    ):
        for org in orgs:
            rows.append((member, org, kind, None, end, "", ""))
            seen: set[tuple[str, str]] = set()
            for key in reach:
                if key not in seen:
                    seen.add(key)
                    rows.append((member, org, kind, None, end, key[0], key[1]))
    return rows


def _task(id: str, resource: dict[str, Any], stamp: int, read: Read) -> list[Grant]:
    status = resource.get("status")
    member = _local(resource.get("for"), "Patient")
    if member is None or status == "entered-in-error":
        return []
    end: int | None = None
    if status in _TASK_TERMINAL:
        modified = resource.get("lastModified")
        parsed = parse_fhir_range(modified) if isinstance(modified, str) else None
        end = stamp if parsed is None else parsed[0]
    named = [*_keys(resource.get("focus")), *_keys(resource.get("basedOn"))]
    supporting: list[tuple[str, str]] = []
    for kind, key in named:
        if kind == "ServiceRequest":
            found = read(kind, key)
            if found is not None:
                supporting.extend(_keys(found.get("supportingInfo")))
    return _referral(
        member,
        ("Task", id),
        _orgs(resource.get("owner")),
        _orgs(resource.get("requester")),
        end,
        named,
        supporting,
    )


def _service_request(id: str, resource: dict[str, Any], stamp: int) -> list[Grant]:
    status = resource.get("status")
    member = _local(resource.get("subject"), "Patient")
    if member is None:
        return []
    if status in _SR_OPEN:
        end = None
    elif status in _SR_TERMINAL:
        end = stamp
    else:
        return []
    return _referral(
        member,
        ("ServiceRequest", id),
        _orgs(resource.get("performer")),
        _orgs(resource.get("requester")),
        end,
        [],
        list(_keys(resource.get("supportingInfo"))),
    )


def organizations(value: Any) -> list[str]:
    """The ``Organization/<id>`` references among ``value``'s Reference elements."""
    return _orgs(value)


def references(value: Any) -> list[tuple[str, str]]:
    """``(type, id)`` of the local relative references among ``value``'s Reference elements."""
    return list(_keys(value))


def stored_reader(read: Callable[[str, str], Any]) -> Read:
    """A ``Read`` over a store's current versions (``read`` gives a version, with its JSON
    ``body``, or None)."""

    def found(type: str, id: str) -> dict[str, Any] | None:
        version = read(type, id)
        if version is None or version.body is None:
            return None
        body: dict[str, Any] = orjson.loads(version.body)
        return body

    return found


def _consent(resource: dict[str, Any]) -> list[Grant]:
    """A member's release of information: rows while the Consent is active (``inactive``,
    ``rejected``: withdrawn); each provision, nested ones too, with its type (inherited when
    absent), period and actors (none: everyone)."""
    if resource.get("status") != "active":
        return []
    member = _local(resource.get("patient"), "Patient")
    if member is None:
        return []
    rows: list[Grant] = []

    def walk(provision: Any, inherited: str | None) -> None:
        if not isinstance(provision, dict):
            return
        kind = provision.get("type") or inherited
        actors = _orgs([a.get("reference") for a in _refs(provision.get("actor"))])
        start, end = _period(provision.get("period"))
        if kind in ("permit", "deny"):
            roi = ROI_PERMIT if kind == "permit" else ROI_DENY
            rows.extend((member, org, roi, start, end, "", "") for org in actors or [EVERYONE])
            labels = {
                (c.get("system"), c.get("code")) for c in _refs(provision.get("securityLabel"))
            }
            if kind == "permit" and labels & PART2_LABELS:
                rows.extend((member, org, ROI_PART2, start, end, "", "") for org in actors)
        for nested in _refs(provision.get("provision")):
            walk(nested, kind if isinstance(kind, str) else None)

    walk(resource.get("provision"), None)
    return list(dict.fromkeys(rows))
