"""The ECM provider told of an assignment (seed 003 VI.E.4): its notice ``received``.

VI.E.4: "Partnership will ensure that ECM provider communication of a Member's assignment to
designated ECM provider occurs within ten (10) business days of authorization." The provider is
told when its ``ecm-notice`` (reason ``ecm-assignment``) is ``received`` — its system confirms
delivery — or when it answers its referral Task (``accepted``/``rejected``). A program rule: when
the provider's assignment notice becomes ``received``, the provider's Task (``about`` the notice,
owned by the recipient, still ``requested``) gets ``businessStatus`` = DHCS ``received`` in the
same unit, so the deadline's work list leaves it out::

    GET Task?owner=…&status=requested&business-status:not=…dhcs-referral-status|received&due=lt…
"""

from __future__ import annotations

from server.auth.principal import Principal
from server.ecm.assignment_facts import body, codes, local, ref
from server.ecm.assignment_records import WORKFLOW
from server.ecm.intake import REFERRAL_STATUS, business_status
from server.writes.rules import ALLOW, Change, Rule, Verdict, derive
from server.writes.write import Write


class AssignmentReceipt(Rule):
    """The provider's Task marked received when its assignment notice is (module docstring)."""

    name = "ecm-assignment-receipt"
    types = frozenset({"Communication"})

    def check(self, change: Change) -> Verdict:
        next, previous = change.next, change.previous
        if next is None or not next.get("received") or (previous or {}).get("received"):
            return ALLOW
        if "ecm-assignment" not in codes(next.get("reasonCode"), WORKFLOW):
            return ALLOW
        recipients = {ref(r) for r in next.get("recipient") or ()}
        writes = []
        for about in (ref(a) for a in next.get("about") or ()):
            key = local(about)
            if key is None or key[0] != "Task":
                continue
            task = body(change.reader.read(*key))
            owner = ref((task or {}).get("owner"))
            if task is None or owner not in recipients or task.get("status") != "requested":
                continue
            if business_status(task) == "received" or not task.get("partOf"):
                continue
            updated = {
                **task,
                "businessStatus": {"coding": [{"system": REFERRAL_STATUS, "code": "received"}]},
            }
            acting = Principal("calaim-fhir", allow_all=True, organization=owner)
            writes.append(Write("update", "Task", id=key[1], resource=updated, principal=acting))
        return derive(*writes) if writes else ALLOW


__all__ = ["AssignmentReceipt"]
