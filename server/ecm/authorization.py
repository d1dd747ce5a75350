"""ECM authorization: an enrollment is active only within an authorization (seed 003 VI.D.8).

"For Members who qualify for the ECM benefit, Partnership requires that a Treatment
Authorization Request (TAR) be submitted to Partnership for review and approval of ECM
services" (VI.D.8); "ECM services shall be authorized for up to six (6) months" (VI.G.1,
VI.G.3.e). The enrollment is an ``ecm-enrollment`` EpisodeOfCare; its authorizations are
``authorization-period`` extensions; a TAR, when recorded, is a ClaimResponse
(``use`` = ``preauthorization``, ``preAuthPeriod``) referenced from the enrollment by the
``ecm-tar`` extension.

A program rule of the write pipeline (``server/writes/rules.py``), for EpisodeOfCare writes of
type ``calaim-program#ecm``:

- **In force** (422): when an enrollment becomes ``active`` (created so, or moved there), an
  authorization must cover the day it becomes active — the start of its current ``active``
  status period (``statusHistory``), else ``period.start``: an ``authorization-period`` whose
  ``start`` .. ``end`` holds that day, or the referenced TAR's ``preAuthPeriod``. A referenced TAR
  on this server must be stored, a ClaimResponse with ``use`` = ``preauthorization``, ``outcome``
  ``complete`` or ``partial`` (approved in whole or in part), for the enrollment's member.
- **Authorization date** (the day the assignment deadline runs from, VI.E.4 "within ten (10)
  business days of authorization"): ``ClaimResponse.created`` when a TAR is recorded, else the
  start of the enrollment's first ``active`` status period. The server keeps it in the
  ``authorization-date`` extension (a client's value is replaced).
- **Authorizer** (VI.D.8 "review and approval"), with the date, in ``authorized-by``: the TAR's
  ``insurer`` when a TAR is recorded; without one, the one recorded before (kept), else the
  authorizer the client names, else the caller's user or organisation (the write that
  authorized it).
"""

from __future__ import annotations

from typing import Any

from server.ecm.calendar import local_date
from server.ecm.referral_lifecycle import _read
from server.errors import Unprocessable
from server.writes.rules import ALLOW, Change, Rule, Verdict, amend, refuse

PROGRAM = "http://calaim-fhir.org/fhir/CodeSystem/calaim-program"
AUTHORIZATION_PERIOD = "http://calaim-fhir.org/fhir/StructureDefinition/authorization-period"
TAR = "http://calaim-fhir.org/fhir/StructureDefinition/ecm-tar"
AUTHORIZATION_DATE = "http://calaim-fhir.org/fhir/StructureDefinition/authorization-date"
AUTHORIZED_BY = "http://calaim-fhir.org/fhir/StructureDefinition/authorized-by"
CLAUSE = "seed 003 VI.D.8 (TAR review and approval of ECM services), docs/ecm-workflow.md"
APPROVED = frozenset({"complete", "partial"})


def _is_ecm(episode: dict[str, Any]) -> bool:
    for concept in episode.get("type") or ():
        for coding in (concept or {}).get("coding") or ():
            if coding.get("system") == PROGRAM and coding.get("code") == "ecm":
                return True
    return False


def _extensions(resource: dict[str, Any], url: str) -> list[dict[str, Any]]:
    return [
        e for e in resource.get("extension") or () if isinstance(e, dict) and e.get("url") == url
    ]


def _active_periods(episode: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        h.get("period") or {}
        for h in episode.get("statusHistory") or ()
        if isinstance(h, dict) and h.get("status") == "active"
    ]


def activation(episode: dict[str, Any]) -> str | None:
    """The day the enrollment's current ``active`` status began: the last ``active`` status
    period's start, else ``period.start``."""
    periods = _active_periods(episode)
    if periods and periods[-1].get("start"):
        return str(periods[-1]["start"])
    start = (episode.get("period") or {}).get("start")
    return str(start) if start else None


def _covers(period: Any, day: str) -> bool:
    if not isinstance(period, dict):
        return False
    when, start = local_date(day), local_date(period.get("start"))
    end = local_date(period.get("end"))
    if when is None or start is None:
        return False
    return start <= when and (end is None or when <= end)


class EnrollmentAuthorization(Rule):
    """An ECM enrollment is active only within an authorization; its authorization date."""

    name = "ecm-enrollment-authorization"
    types = frozenset({"EpisodeOfCare"})

    def check(self, change: Change) -> Verdict:
        next = change.next
        if next is None or not _is_ecm(next):
            return ALLOW
        previous = change.previous
        tar, tar_ref = self._tar(change, next)
        if isinstance(tar, Verdict):
            return tar
        becoming = next.get("status") == "active" and (
            previous is None
            or previous.get("status") != "active"
            or activation(previous) != activation(next)
        )
        if becoming:
            refused = self._in_force(change, next, tar)
            if refused is not None:
                return refused
        return self._dated(change, next, tar, tar_ref)

    def _tar(
        self, change: Change, episode: dict[str, Any]
    ) -> tuple[dict[str, Any] | None | Verdict, str | None]:
        """The referenced TAR (None: none, or on another server), or the refusal."""
        found = _extensions(episode, TAR)
        if not found:
            return None, None
        ref = (found[-1].get("valueReference") or {}).get("reference")
        where = f"{change.root}.extension"
        if not isinstance(ref, str) or "://" in ref:
            return None, ref if isinstance(ref, str) else None
        parts = ref.split("/")
        if len(parts) != 2 or parts[0] != "ClaimResponse":
            return self._refuse(f"the TAR {ref} is not a ClaimResponse", where), None
        tar = _read(change.reader, (parts[0], parts[1]))
        if tar is None:
            return self._refuse(f"the TAR {ref} is not stored", where), None
        if tar.get("use") != "preauthorization":
            return self._refuse(f"the TAR {ref} is not a preauthorization (use)", where), None
        if tar.get("outcome") not in APPROVED:
            return (
                self._refuse(
                    f"the TAR {ref} was not approved (outcome {tar.get('outcome')}; complete or "
                    "partial approves)",
                    where,
                ),
                None,
            )
        member = (episode.get("patient") or {}).get("reference")
        if (tar.get("patient") or {}).get("reference") != member:
            return self._refuse(f"the TAR {ref} is for another member than {member}", where), None
        return tar, ref

    def _in_force(
        self, change: Change, episode: dict[str, Any], tar: dict[str, Any] | None
    ) -> Verdict | None:
        day = activation(episode)
        if day is None:
            return None  # the profile requires period.start
        periods = [e.get("valuePeriod") for e in _extensions(episode, AUTHORIZATION_PERIOD)]
        if tar is not None:
            periods.append(tar.get("preAuthPeriod"))
        if any(_covers(p, day) for p in periods):
            return None
        return self._refuse(
            f"an ECM enrollment is active only within an authorization in force: none covers "
            f"{day}, the day it becomes active (authorization-period, or the TAR's "
            "preAuthPeriod)",
            f"{change.root}.status",
        )

    def _dated(
        self,
        change: Change,
        episode: dict[str, Any],
        tar: dict[str, Any] | None,
        tar_ref: str | None,
    ) -> Verdict:
        """The server's authorization date: the TAR's ``created``, else the start of the
        first active period (None: not yet authorized); and who authorized it."""
        date: str | None = None
        if tar is not None and tar.get("created"):
            day = local_date(tar.get("created"))
            date = None if day is None else day.isoformat()
        elif tar_ref is None:
            periods = _active_periods(episode)
            if periods and periods[0].get("start"):
                date = str(periods[0]["start"])[:10]
            elif episode.get("status") in ("active", "finished") and activation(episode):
                date = str(activation(episode))[:10]
        others = [
            e
            for e in episode.get("extension") or ()
            if not (isinstance(e, dict) and e.get("url") in (AUTHORIZATION_DATE, AUTHORIZED_BY))
        ]
        wanted = others + ([{"url": AUTHORIZATION_DATE, "valueDate": date}] if date else [])
        by = self._authorizer(change, episode, tar) if date or tar_ref else None
        if by is not None:
            wanted.append({"url": AUTHORIZED_BY, "valueReference": {"reference": by}})
        if wanted == (episode.get("extension") or []):
            return ALLOW
        amended = dict(episode)
        if wanted:
            amended["extension"] = wanted
        else:
            amended.pop("extension", None)
        return amend(amended)

    @staticmethod
    def _authorizer(
        change: Change, episode: dict[str, Any], tar: dict[str, Any] | None
    ) -> str | None:
        """The TAR's insurer; else the one recorded before, the client's or the caller's."""
        if tar is not None:
            insurer = (tar.get("insurer") or {}).get("reference")
            return insurer if isinstance(insurer, str) else None
        for source in (change.previous or {}, episode):
            for e in _extensions(source, AUTHORIZED_BY):
                ref = (e.get("valueReference") or {}).get("reference")
                if isinstance(ref, str):
                    return ref
        return change.principal.user or change.principal.organization

    @staticmethod
    def _refuse(why: str, where: str) -> Verdict:
        return refuse(Unprocessable(f"ECM authorization: {why} ({CLAUSE})", expression=where))


__all__ = ["EnrollmentAuthorization", "activation"]
