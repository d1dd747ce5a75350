"""What ``$ecm-assign`` reads, as the issue's "How the inputs are recorded" says
(docs/ecm-workflow.md, "Assignment"): every fact is a search of the store through a ``Reader``
(a commit: inside the operation's write unit, so what it counts holds for what it
commits; a preview: on a reader).

- PCP: ``Patient.generalPractitioner`` (an Organization, or a PractitionerRole's organization);
- behavioural health: active EpisodeOfCare of ``ecm-program`` ``smhs``, ``dmc-ods`` or ``dmc``,
  their ``managingOrganization``; Whole Child Model: an active one of type ``ccs-wcm``;
- contracted ECM providers: active ``ecm-provider-service`` HealthcareServices of category
  ``ecm`` (a ``letter-of-agreement`` extension: an agreement, not a contract), read by
  ``network.agreement`` as continuity of care reads them;
- the authorization: the ``ecm-enrollment`` EpisodeOfCare whose ``referralRequest`` is the
  referral (Populations of Focus from it, else from the referral's ``reasonCode``);
- a transitioning member's existing provider: the managing organisation of the member's previous
  ``ecm-enrollment`` (another than the authorization; READ only);
- capacity in use: counted by the index, never stored (``capacity_in_use``: one grouped count
  for every service, the store's ``count_by``).

Outside a write unit, the parsed services and the capacity counts are kept in memory under the
store's stamp of their type (``Reader.stamp``), read before them: a write of a HealthcareService
(a ServiceRequest) by any process changes the stamp, and the next call reads them again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from threading import Lock
from typing import Any, TypeVar
from urllib.parse import quote

import orjson

from server.ecm.assignment import Member, Service
from server.ecm.network import SERVICES, agreement
from server.ports import Reader, Version
from server.search.parse import MAX_VALUES, SearchContext, parse_criteria_string
from server.search.query import Criteria, SearchQuery

BASE = "http://calaim-fhir.org/fhir"
POF_EXT = f"{BASE}/StructureDefinition/population-of-focus"
POF_SYSTEM = f"{BASE}/CodeSystem/ecm-population-of-focus"
CAPACITY_EXT = f"{BASE}/StructureDefinition/service-capacity"
ECM_PROGRAM = f"{BASE}/CodeSystem/ecm-program"
CALAIM_PROGRAM = f"{BASE}/CodeSystem/calaim-program"
CARE_TEAM_ROLE = f"{BASE}/CodeSystem/ecm-care-team-role"
#: the ECM provider's order for one member (``ServiceRequest.intent``), counted against capacity
FILLER_ORDER = "filler-order"
BEHAVIORAL_HEALTH = frozenset({"smhs", "dmc-ods", "dmc"})
WHOLE_CHILD_MODEL = "ccs-wcm"
OPEN_ENROLLMENT = ("planned", "waitlist", "active", "onhold")
MAX_SERVICES = 5000
MAX_ROLES = 200
#: parsed services by (id, stored bytes): a stored version never changes, so a service is
#: parsed once per version, not per call; bounded (cleared when full)
_PARSED: dict[tuple[str, bytes], tuple[Service, str | None] | None] = {}
_PARSED_MAX = 20_000
#: every active ECM service as parsed, under the store's stamp of HealthcareService
#: (``Reader.stamp``: any write of a HealthcareService, by any process, changes it), so a
#: preview reads one stamp instead of 1,000 bodies
_SERVICES: dict[tuple[Any, ...], tuple[tuple[Service, str | None], ...]] = {}
#: capacity counts by count query, under the store's stamp of ServiceRequest (any order
#: written, by any process, changes it): previews with no assignment written in between
#: count once; the latest few stamps
_COUNTS: dict[tuple[Any, ...], dict[str, dict[str, int]]] = {}
_KEPT_STAMPS = 8
_KEPT_QUERIES = 256
_KEPT_LOCK = Lock()
T = TypeVar("T")
#: parsed search criteria by (type, query), for the context they were parsed in
_CRITERIA: dict[tuple[str, str], tuple[SearchContext, Criteria]] = {}
_CRITERIA_MAX = 20_000


def body(version: Version | None) -> dict[str, Any] | None:
    if version is None or version.body is None:
        return None
    parsed: dict[str, Any] = orjson.loads(version.body)
    return parsed


def ref(value: Any) -> str | None:
    found = value.get("reference") if isinstance(value, dict) else None
    return found if isinstance(found, str) else None


def local(reference: str | None) -> tuple[str, str] | None:
    if reference is None or "://" in reference or reference.count("/") != 1:
        return None
    type, id = reference.split("/")
    return (type, id) if type and id else None


def codes(concepts: Any, system: str) -> set[str]:
    found: set[str] = set()
    for concept in concepts or ():
        for coding in (concept or {}).get("coding") or ():
            if coding.get("system") == system and isinstance(coding.get("code"), str):
                found.add(coding["code"])
    return found


def pofs_of(resource: dict[str, Any]) -> frozenset[str]:
    """The ``population-of-focus`` extensions' codes."""
    return frozenset(
        code
        for e in resource.get("extension") or ()
        if e.get("url") == POF_EXT
        for code in codes([e.get("valueCodeableConcept")], POF_SYSTEM)
    )


@dataclass(frozen=True, slots=True)
class Facts:
    """The store, as the assignment reads it."""

    reader: Reader
    search: SearchContext

    def criteria(self, type: str, query: str) -> Criteria:
        """``query`` parsed (once per process and search context)."""
        cached = _CRITERIA.get((type, query))
        if cached is not None and cached[0] is self.search:
            return cached[1]
        criteria = parse_criteria_string(type, query, self.search)
        if len(_CRITERIA) >= _CRITERIA_MAX:
            _CRITERIA.clear()
        _CRITERIA[(type, query)] = (self.search, criteria)
        return criteria

    def versions(self, type: str, query: str, count: int) -> list[Version]:
        return self.reader.search(SearchQuery(self.criteria(type, query), count=count)).items

    def find(self, type: str, query: str, count: int = 100) -> Iterator[tuple[str, dict[str, Any]]]:
        for version in self.versions(type, query, count):
            found = body(version)
            if found is not None:
                yield version.id, found

    def count(self, type: str, query: str) -> int:
        criteria = self.criteria(type, query)
        page = self.reader.search(SearchQuery(criteria, count=0, total="accurate"))
        return page.total or 0

    def read(self, reference: str | None) -> dict[str, Any] | None:
        key = local(reference)
        return None if key is None else body(self.reader.read(*key))

    # -- the member ----------------------------------------------------------------------------

    def organization_of(self, reference: str | None) -> str | None:
        """An Organization reference as it is, or a PractitionerRole's organization."""
        key = local(reference)
        if key is None:
            return None
        if key[0] == "Organization":
            return reference
        if key[0] == "PractitionerRole":
            return ref((self.read(reference) or {}).get("organization"))
        return None

    def enrollments(self, member: str) -> list[tuple[str, dict[str, Any]]]:
        """The member's ECM enrollments (``ecm-enrollment`` EpisodeOfCare), any status."""
        return list(
            self.find("EpisodeOfCare", f"patient={member}&type={CALAIM_PROGRAM}|ecm", 100)
        )

    def member(
        self,
        patient: dict[str, Any],
        member: str,
        authorization: str | None,
        pofs: frozenset[str],
        preference: str | None,
        referral_preference: str | None,
        exclude: frozenset[str],
    ) -> Member:
        pcp = {
            org
            for gp in patient.get("generalPractitioner") or ()
            if (org := self.organization_of(ref(gp))) is not None
        }
        behavioral: set[str] = set()
        wcm = False
        for _, episode in self.find("EpisodeOfCare", f"patient={member}&status=active", 100):
            types = codes(episode.get("type"), ECM_PROGRAM)
            org = ref(episode.get("managingOrganization"))
            if types & BEHAVIORAL_HEALTH and org is not None:
                behavioral.add(org)
            if WHOLE_CHILD_MODEL in types:
                wcm = True
        return Member(
            pofs=pofs,
            pcp=frozenset(pcp),
            behavioral_health=frozenset(behavioral),
            whole_child_model=wcm,
            existing_provider=self.existing_provider(member, authorization),
            preference=preference,
            referral_preference=referral_preference,
            language=language_of(patient),
            exclude=exclude,
        )

    def existing_provider(self, member: str, authorization: str | None) -> str | None:
        """The managing organisation of the member's previous ECM enrollment (VI.G.3.c): the
        latest started one other than ``authorization`` that has a provider."""
        previous = [
            (str((e.get("period") or {}).get("start") or ""), ref(e.get("managingOrganization")))
            for id, e in self.enrollments(member)
            if f"EpisodeOfCare/{id}" != authorization
        ]
        named = sorted((p for p in previous if p[1] is not None), reverse=True)
        return named[0][1] if named else None

    # -- the providers -------------------------------------------------------------------------

    def services(self) -> Sequence[tuple[Service, str | None]]:
        """Every active ECM HealthcareService (its capacity in use not yet counted: ``counted``
        False until ``with_use``), with the ``asOf`` its ``openSlots`` count from (None: a
        ``panelSize``). Kept under the reader's stamp of HealthcareService, read before the
        services (so what is kept is never older than its stamp); without a stamp (inside a
        write unit, a caller narrowed per resource) read from the store each time."""
        stamp = self.reader.stamp("HealthcareService")
        if stamp is None:
            return self._read_services()
        return _kept(_SERVICES, stamp, lambda: tuple(self._read_services()))

    def _read_services(self) -> list[tuple[Service, str | None]]:
        found = []
        for version in self.versions("HealthcareService", SERVICES, MAX_SERVICES):
            if version.body is None:
                continue
            key = (version.id, version.body)
            if key not in _PARSED:
                if len(_PARSED) >= _PARSED_MAX:
                    _PARSED.clear()
                resource = body(version)
                assert resource is not None
                _PARSED[key] = self.service(f"HealthcareService/{version.id}", resource)
            parsed = _PARSED[key]
            if parsed is not None:
                found.append(parsed)
        return found

    def service(
        self, reference: str, resource: dict[str, Any]
    ) -> tuple[Service, str | None] | None:
        terms = agreement(resource)
        capacity = capacity_of(resource)
        if terms is None or capacity is None:
            return None
        languages = frozenset(
            code.split("-")[0].lower()
            for c in resource.get("communication") or ()
            for coding in c.get("coding") or ()
            if isinstance(code := coding.get("code"), str)
        )
        service = Service(
            ref=reference,
            provider=terms.provider,
            name=str(resource.get("name") or reference),
            pofs=pofs_of(resource),
            languages=languages,
            limit=capacity[0],
            in_use=0,
            letter_of_agreement=terms.letter_of_agreement,
            counted=False,
        )
        return service, capacity[1]

    def with_use(self, service: Service, in_use: int, member: Member) -> Service:
        """``service`` with its capacity in use (``capacity_in_use``) and, for a Whole Child
        Model member, the provider's CCS case managers."""
        ccs = self.roles(service.provider, "ccs-case-manager") if member.whole_child_model else ()
        return replace(service, in_use=in_use, ccs_case_managers=ccs, counted=True)

    def capacity_in_use(self, services: Sequence[tuple[Service, str | None]]) -> dict[str, int]:
        """Per service (reference), the active filler orders naming it as performer (pending
        assignments and enrollments in service; a discontinued or reassigned one is no longer
        active); with ``openSlots`` only those authored at or after its ``asOf``. One grouped
        index count per distinct ``asOf`` (the ``panelSize`` services: one), of at most
        ``MAX_VALUES`` services each; a commit counts inside the unit that writes: concurrent
        commits see each other's orders. Outside a unit the counts are kept under the reader's
        stamp of ServiceRequest, read before them: counted again once any ServiceRequest is
        written."""
        by_since: dict[str | None, list[str]] = {}
        for service, since in services:
            by_since.setdefault(since, []).append(service.ref)
        stamp = self.reader.stamp("ServiceRequest")  # before the counts it vouches for
        kept = None if stamp is None else _kept(_COUNTS, stamp, dict)
        used: dict[str, int] = {}
        for since, refs in by_since.items():
            for start in range(0, len(refs), MAX_VALUES):
                chunk = sorted(refs[start : start + MAX_VALUES])
                query = f"intent={FILLER_ORDER}&status=active&performer={','.join(chunk)}"
                if since is not None:
                    query += f"&authored=ge{quote(since)}"
                counts = None if kept is None else kept.get(query)
                if counts is None:
                    counts = self.reader.count_by(
                        self.criteria("ServiceRequest", query), "performer", "HealthcareService"
                    )
                    if kept is not None and len(kept) < _KEPT_QUERIES:
                        kept[query] = counts
                used.update((ref, counts.get(ref, 0)) for ref in chunk)
        return used

    def roles(self, organization: str, code: str) -> tuple[str, ...]:
        """The organisation's active PractitionerRoles with ``code`` (``ecm-care-team-role``)."""
        query = f"organization={organization}&active=true&role={CARE_TEAM_ROLE}|{code}"
        return tuple(
            sorted(f"PractitionerRole/{id}" for id, _ in self.find("PractitionerRole", query,
                                                                   MAX_ROLES))
        )

    def lead_care_managers(self, organization: str) -> tuple[str, ...]:
        return self.roles(organization, "lead-care-manager")


def _kept(store: dict[tuple[Any, ...], T], stamp: tuple[Any, ...], make: Callable[[], T]) -> T:
    """What ``store`` keeps under ``stamp``, made when it holds nothing there; the latest
    ``_KEPT_STAMPS`` stamps only (several stores, or one stamp after another)."""
    found = store.get(stamp)
    if found is not None:
        return found
    made = make()
    with _KEPT_LOCK:  # readers run on several threads
        while len(store) >= _KEPT_STAMPS:
            del store[next(iter(store))]  # the oldest
        return store.setdefault(stamp, made)


def capacity_of(resource: dict[str, Any]) -> tuple[int, str | None] | None:
    """The limit of a service and, for ``openSlots``, since when assignments count against it:
    ``(panelSize, None)`` when it declares one, else ``(openSlots, asOf)``."""
    for e in resource.get("extension") or ():
        if e.get("url") != CAPACITY_EXT:
            continue
        parts = {p.get("url"): p for p in e.get("extension") or ()}
        panel = (parts.get("panelSize") or {}).get("valueUnsignedInt")
        if isinstance(panel, int):
            return panel, None
        slots = (parts.get("openSlots") or {}).get("valueUnsignedInt")
        if isinstance(slots, int):
            return slots, (parts.get("asOf") or {}).get("valueDateTime")
    return None


def language_of(patient: dict[str, Any]) -> str | None:
    """The member's preferred language (``communication.preferred``, else the first)."""
    entries = patient.get("communication") or []
    chosen = next((c for c in entries if c.get("preferred") is True), None)
    chosen = chosen or (entries[0] if entries else None)
    for coding in ((chosen or {}).get("language") or {}).get("coding") or ():
        if isinstance(coding.get("code"), str):
            return str(coding["code"]).split("-")[0].lower()
    return None


__all__ = ["Facts", "body", "capacity_of", "language_of", "local", "pofs_of", "ref"]
