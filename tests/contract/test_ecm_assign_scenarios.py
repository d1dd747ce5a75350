"""``Patient/[id]/$ecm-assign`` over HTTP on both stores (docs/ecm-workflow.md, "Assignment").

Expectations are written by hand from the clauses of seed 003 (MCCP2032): VI.E.1.a (experienced
in the Population of Focus), VI.E.1.d (capacity), VI.E.2 (known preferences), VI.E.2.a (PCP),
VI.E.2.b (behavioural health), VI.E.2.c (CCS case manager, Whole Child Model), VI.E.3
(reassignment within 30 days of the request), VI.E.4 (the provider told within ten business days
of authorization), VI.G.3.c (existing provider, letter of agreement). Where the seeds are silent
(rule precedence, tie-breaker) the plan's configuration decides, else a person (``needsReview``).

The world: the member Ana (``Patient/ecm-member-example``, English, Population of Focus
``birth-equity-adult``) referred to the plan Golden Poppy (configured: rule order
behavioral-health, pcp, ccs-case-manager; tie-breaker most-open-capacity; its own holiday on
21 December 2026) or to the plan Redwood (no configuration: the defaults).
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from server.auth.principal import LOCAL, Principal
from server.ecm import intake
from server.fhir.instant import from_datetime
from server.store import faults
from tests.ecm_scene import concept as _concept
from tests.ecm_scene import example as _example
from tests.ecm_scene import ok as _ok
from tests.operation_output import check_output
from tests.support import Acting, TestClient, clear_store, expressions, fhir_client, outcome

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "resources"
OPERATIONS = EXAMPLES.parents[1] / "profiles" / "operations"
DEFINITION = json.loads((OPERATIONS / "OperationDefinition-Patient-ecm-assign.json").read_text())
BASE = "http://calaim-fhir.org/fhir"
POF = f"{BASE}/CodeSystem/ecm-population-of-focus"
POF_EXT = f"{BASE}/StructureDefinition/population-of-focus"
CAPACITY = f"{BASE}/StructureDefinition/service-capacity"
LOA = f"{BASE}/StructureDefinition/letter-of-agreement"
PROGRAM = f"{BASE}/CodeSystem/ecm-program"
ROLE = f"{BASE}/CodeSystem/ecm-care-team-role"
REFERRAL_STATUS = f"{BASE}/CodeSystem/dhcs-referral-status"
TAR_EXT = f"{BASE}/StructureDefinition/ecm-tar"
AUTH_PERIOD = f"{BASE}/StructureDefinition/authorization-period"
MEMBER = "Patient/ecm-member-example"
GOLDEN = "Organization/golden-poppy-health-plan"
REDWOOD = "Organization/redwood-health-plan"
CBO = "Organization/casa-segura-housing"
GOLDEN_STAFF = Principal("golden-app", allow_all=True, organization=GOLDEN)
REDWOOD_STAFF = Principal("redwood-app", allow_all=True, organization=REDWOOD)
BIRTH_EQUITY = "birth-equity-adult"
HOMELESS = "homelessness-adult"
# Monday 14 December 2026, 09:00 in California
MONDAY = "2026-12-14T17:00:00.000000Z"


def _us(instant: str) -> int:
    from datetime import datetime

    return from_datetime(datetime.fromisoformat(instant.replace("Z", "+00:00")))


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake, "now", lambda: _us(MONDAY))


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("plans")
    (folder / "golden-poppy.json").write_text(
        json.dumps(
            {
                "organization": GOLDEN,
                "holidays": ["2026-12-21"],
                "assignmentRuleOrder": ["behavioral-health", "pcp", "ccs-case-manager"],
                "assignmentTieBreaker": "most-open-capacity",
            }
        )
    )
    return folder


@pytest.fixture(scope="module")
def assign_client(database_url: str, acting: Acting, plan_dir: Path) -> Iterator[TestClient]:
    with fhir_client(database_url, principals=acting, ecm_plan_config_dir=str(plan_dir)) as c:
        yield c


@pytest.fixture
def app(assign_client: TestClient, database_url: str, acting: Acting) -> Iterator[TestClient]:
    clear_store(database_url)
    acting.as_(LOCAL)
    yield assign_client
    acting.as_(LOCAL)


# -- the world ---------------------------------------------------------------------------------


def _org(id: str, name: str | None = None) -> dict[str, Any]:
    return {"resourceType": "Organization", "id": id, "active": True, "name": name or id}


def _service(
    id: str,
    provider: str,
    *,
    pofs: tuple[str, ...] = (BIRTH_EQUITY,),
    slots: int | None = None,
    panel: int | None = 10,
    as_of: str = "2026-12-01T00:00:00-08:00",
    languages: tuple[str, ...] = ("en",),
    loa: tuple[str, str] | None = None,
) -> dict[str, Any]:
    body = copy.deepcopy(_example("HealthcareService-ecm-provider-service-example"))
    body["id"] = id
    body.pop("identifier")
    body["name"] = f"{provider} ECM"
    body["providedBy"] = {"reference": f"Organization/{provider}"}
    capacity: list[dict[str, Any]] = [{"url": "openSlots", "valueUnsignedInt": slots or 0}]
    if panel is not None and slots is None:
        capacity.append({"url": "panelSize", "valueUnsignedInt": panel})
    if slots is not None:
        capacity.append({"url": "asOf", "valueDateTime": as_of})
    extensions = [e for e in body["extension"] if e["url"] not in (POF_EXT, CAPACITY)]
    extensions += [{"url": POF_EXT, "valueCodeableConcept": _concept(POF, p)} for p in pofs]
    extensions.append({"url": CAPACITY, "extension": capacity})
    if loa is not None:
        extensions.append({"url": LOA, "valuePeriod": {"start": loa[0], "end": loa[1]}})
    body["extension"] = extensions
    body["communication"] = [_concept("urn:ietf:bcp:47", code) for code in languages]
    return body


def _role(id: str, org: str, code: str = "lead-care-manager") -> dict[str, Any]:
    return {
        "resourceType": "PractitionerRole",
        "id": id,
        "active": True,
        "organization": {"reference": f"Organization/{org}"},
        "code": [_concept(ROLE, code)],
    }


def _episode(id: str, program: str, org: str, member: str = MEMBER) -> dict[str, Any]:
    """An active EpisodeOfCare of another programme (SMHS, DMC, CCS WCM)."""
    return {
        "resourceType": "EpisodeOfCare",
        "id": id,
        "status": "active",
        "type": [_concept(PROGRAM, program)],
        "patient": {"reference": member},
        "managingOrganization": {"reference": f"Organization/{org}"},
        "period": {"start": "2026-01-01"},
    }


def _member(id: str = "ecm-member-example", **extra: Any) -> dict[str, Any]:
    body = _example("Patient-ecm-member-example")
    body["id"] = id
    for identifier in body["identifier"]:
        identifier["value"] = f"{identifier['value']}-{id}"
    body.update(extra)
    return body


def _referral(id: str, member: str = MEMBER, plan: str = GOLDEN, **extra: Any) -> dict[str, Any]:
    body = _example("ServiceRequest-ecm-referral-example")
    body["id"] = id
    body.pop("identifier")
    body.pop("supportingInfo")
    body["subject"] = {"reference": member}
    body["requester"] = {"reference": CBO}
    body["performer"] = [{"reference": plan}]
    body.update(extra)
    return body


def _plan_task(id: str, referral: str, member: str = MEMBER, plan: str = GOLDEN
               ) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "id": id,
        "meta": {"profile": [f"{BASE}/StructureDefinition/ecm-referral-task"]},
        "status": "accepted",
        "businessStatus": _concept(REFERRAL_STATUS, "authorized"),
        "intent": "order",
        "code": _concept("http://hl7.org/fhir/CodeSystem/task-code", "fulfill"),
        "focus": {"reference": f"ServiceRequest/{referral}"},
        "for": {"reference": member},
        "authoredOn": "2026-12-01T10:00:00-08:00",
        "requester": {"reference": CBO},
        "owner": {"reference": plan},
    }


def _tar(id: str, member: str = MEMBER) -> dict[str, Any]:
    return {
        "resourceType": "ClaimResponse",
        "id": id,
        "status": "active",
        "type": _concept("http://terminology.hl7.org/CodeSystem/claim-type", "professional"),
        "use": "preauthorization",
        "patient": {"reference": member},
        # Thursday 10 December 2026 in California
        "created": "2026-12-10T10:00:00-08:00",
        "insurer": {"reference": GOLDEN},
        "outcome": "complete",
        "preAuthPeriod": {"start": "2026-12-10", "end": "2027-06-09"},
    }


def _authorization(id: str, referral: str, member: str = MEMBER, tar: str | None = None,
                   pofs: tuple[str, ...] = (BIRTH_EQUITY,)) -> dict[str, Any]:
    """The plan's authorization: a planned ecm-enrollment naming the referral, no provider."""
    extensions: list[dict[str, Any]] = [
        {"url": POF_EXT, "valueCodeableConcept": _concept(POF, p)} for p in pofs
    ]
    extensions.append(
        {"url": AUTH_PERIOD, "valuePeriod": {"start": "2026-12-10", "end": "2027-06-09"}}
    )
    if tar is not None:
        extensions.append({"url": TAR_EXT, "valueReference": {"reference": f"ClaimResponse/{tar}"}})
    return {
        "resourceType": "EpisodeOfCare",
        "id": id,
        "meta": {"profile": [f"{BASE}/StructureDefinition/ecm-enrollment"]},
        "extension": extensions,
        "status": "planned",
        "type": [_concept(f"{BASE}/CodeSystem/calaim-program", "ecm")],
        "patient": {"reference": member},
        "period": {"start": "2026-12-10"},
        "referralRequest": [{"reference": f"ServiceRequest/{referral}"}],
    }


def _case(n: str = "1", member: str = MEMBER, plan: str = GOLDEN, *,
          pofs: tuple[str, ...] = (BIRTH_EQUITY,), **referral: Any) -> list[dict[str, Any]]:
    """A referral, the plan's accepted Task, a TAR and the planned enrollment."""
    return [
        _referral(f"ref-{n}", member, plan, **referral),
        _plan_task(f"plan-task-{n}", f"ref-{n}", member, plan),
        _tar(f"tar-{n}", member),
        _authorization(f"auth-{n}", f"ref-{n}", member, tar=f"tar-{n}", pofs=pofs),
    ]


def _load(app: TestClient, *resources: dict[str, Any], with_case: bool = True) -> None:
    """The plans, the CBO, the member and ``resources`` (and case 1), as the operator."""
    base = [_org("golden-poppy-health-plan", "Golden Poppy"), _org("redwood-health-plan"),
            _org("casa-segura-housing"), _member()]
    ids = {(r["resourceType"], r["id"]) for r in resources}
    everything = [r for r in base if (r["resourceType"], r["id"]) not in ids] + list(resources)
    if with_case:
        everything += [r for r in _case() if (r["resourceType"], r["id"]) not in ids]
    entries = [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in everything
    ]
    _ok(app.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                "entry": entries}))


def _providers(*ids: str) -> list[dict[str, Any]]:
    return [_org(i) for i in ids]


def _assign(app: TestClient, member: str = MEMBER, status: int = 200, **params: Any
            ) -> dict[str, Any]:
    parameter: list[dict[str, Any]] = []
    for name, value in params.items():
        if name in ("referral", "preference"):
            parameter.append({"name": name, "valueReference": {"reference": value}})
        elif name == "reassign":
            parameter.append({"name": name, "valueBoolean": value})
        elif name in ("asOf", "requestDate"):
            parameter.append({"name": name, "valueDate": value})
        else:
            parameter.append({"name": name, "valueCode": value})
    body = {"resourceType": "Parameters", "parameter": parameter}
    answer = _ok(app.post(f"/fhir/{member}/$ecm-assign", json=body), status)
    assert check_output(DEFINITION, answer) == []  # as the OperationDefinition says
    return answer


def _out(answer: dict[str, Any], name: str) -> Any:
    for p in answer.get("parameter") or ():
        if p["name"] == name:
            value = next((v for k, v in p.items() if k.startswith("value")), None)
            return value["reference"] if isinstance(value, dict) and "reference" in value else value
    return None


def _candidates(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """provider -> {eligible, rule (list), failed (list)}."""
    found: dict[str, dict[str, Any]] = {}
    for p in answer.get("parameter") or ():
        if p["name"] != "candidate":
            continue
        parts: dict[str, Any] = {"rule": [], "failed": []}
        for part in p["part"]:
            value = next(v for k, v in part.items() if k.startswith("value"))
            if part["name"] in ("rule", "failed"):
                parts[part["name"]].append(value)
            elif part["name"] in ("provider", "healthcareService"):
                parts[part["name"]] = value["reference"]
            else:
                parts[part["name"]] = value
        found[parts["provider"]] = parts
    return found


def _count(app: TestClient, query: str) -> int:
    return int(_ok(app.get(f"/fhir/{query}&_summary=count"))["total"])


# -- hard filters (VI.E.1) ---------------------------------------------------------------------


def test_hard_filters_population_capacity_network(app: TestClient) -> None:
    """Only one service passes: the others are not experienced in birth equity (VI.E.1.a), have
    no open capacity (VI.E.1.d), or are only under a letter of agreement for a member who is
    not theirs (VI.G.3.c)."""
    _load(
        app,
        *_providers("homeless-org", "full-org", "loa-org", "good-org"),
        _service("svc-homeless", "homeless-org", pofs=(HOMELESS,)),
        _service("svc-full", "full-org", slots=0),
        _service("svc-loa", "loa-org", loa=("2026-01-01", "2027-12-31")),
        _service("svc-good", "good-org"),
    )
    answer = _assign(app, referral="ServiceRequest/ref-1")
    assert _out(answer, "provider") == "Organization/good-org"
    assert _out(answer, "healthcareService") == "HealthcareService/svc-good"
    assert _out(answer, "rule") == "single-candidate"
    assert _out(answer, "needsReview") is False
    candidates = _candidates(answer)
    assert candidates["Organization/homeless-org"]["failed"] == ["pof-experience"]
    assert candidates["Organization/full-org"]["failed"] == ["capacity"]
    assert candidates["Organization/loa-org"]["failed"] == ["network"]
    assert candidates["Organization/good-org"]["eligible"] is True
    assert candidates["Organization/good-org"]["openCapacity"] == 10
    # preview writes nothing
    assert _count(app, "Task?part-of=Task/plan-task-1") == 0


def test_every_authorized_population_must_be_served(app: TestClient) -> None:
    """Two authorized Populations of Focus: a service serving one of them fails VI.E.1.a."""
    case = _case("2", pofs=(BIRTH_EQUITY, HOMELESS))
    _load(app, *_providers("one-pof", "both-pofs"),
          _service("svc-one", "one-pof"),
          _service("svc-both", "both-pofs", pofs=(BIRTH_EQUITY, HOMELESS)), *case)
    answer = _assign(app, referral="ServiceRequest/ref-2")
    assert _out(answer, "provider") == "Organization/both-pofs"
    assert _candidates(answer)["Organization/one-pof"]["failed"] == ["pof-experience"]


def test_no_eligible_provider_goes_to_a_person(app: TestClient) -> None:
    _load(app, *_providers("full-org"), _service("svc-full", "full-org", slots=0))
    answer = _assign(app, referral="ServiceRequest/ref-1")
    assert _out(answer, "needsReview") is True
    assert _out(answer, "provider") is None
    assert "hard filters" in _out(answer, "explanation")


# -- the rules in the seed's words (VI.E.2, VI.G.3.c) -------------------------------------------


def test_the_pcp_that_is_a_contracted_ecm_provider(app: TestClient) -> None:
    """VI.E.2.a, the PCP named through a PractitionerRole at the organisation."""
    member = _member(generalPractitioner=[{"reference": "PractitionerRole/dr-pcp"}])
    _load(app, member, *_providers("pcp-clinic", "other-org"), _role("dr-pcp", "pcp-clinic",
          "primary-care-provider"),
          _service("svc-pcp", "pcp-clinic"), _service("svc-other", "other-org"))
    answer = _assign(app, referral="ServiceRequest/ref-1")
    assert _out(answer, "provider") == "Organization/pcp-clinic"
    assert _out(answer, "rule") == "pcp"
    # both speak the member's language (English): met, but it does not separate them
    assert _candidates(answer)["Organization/pcp-clinic"]["rule"] == ["pcp", "language"]


def test_the_behavioral_health_provider(app: TestClient) -> None:
    """VI.E.2.b: the member is served by the county SMHS; that provider is contracted."""
    _load(app, *_providers("county-bh", "other-org"),
          _episode("smhs-1", "smhs", "county-bh"),
          _service("svc-bh", "county-bh"), _service("svc-other", "other-org"))
    answer = _assign(app, referral="ServiceRequest/ref-1")
    assert _out(answer, "provider") == "Organization/county-bh"
    assert _out(answer, "rule") == "behavioral-health"


def test_the_ccs_case_manager_becomes_the_lead_care_manager(app: TestClient) -> None:
    """VI.E.2.c: a Whole Child Model member; the CCS case manager is the Lead Care Manager."""
    _load(app, *_providers("ccs-org", "other-org"),
          _episode("wcm-1", "ccs-wcm", "ccs-county"), _org("ccs-county"),
          _role("ccs-cm", "ccs-org", "ccs-case-manager"), _role("lcm-1", "ccs-org"),
          _service("svc-ccs", "ccs-org"), _service("svc-other", "other-org"))
    answer = _assign(app, referral="ServiceRequest/ref-1")
    assert _out(answer, "provider") == "Organization/ccs-org"
    assert _out(answer, "rule") == "ccs-case-manager"
    assert _out(answer, "leadCareManager") == "PractitionerRole/ccs-cm"


def test_the_members_preference_comes_first(app: TestClient) -> None:
    """VI.E.2.a "unless the Member has expressed a different preference"."""
    member = _member(generalPractitioner=[{"reference": "Organization/pcp-clinic"}])
    _load(app, member, *_providers("pcp-clinic", "chosen-org"),
          _service("svc-pcp", "pcp-clinic"), _service("svc-chosen", "chosen-org"))
    answer = _assign(app, referral="ServiceRequest/ref-1", preference="Organization/chosen-org")
    assert _out(answer, "provider") == "Organization/chosen-org"
    assert _out(answer, "rule") == "member-preference"
    # both speak the member's language (English): met, but it does not separate them
    assert _candidates(answer)["Organization/pcp-clinic"]["rule"] == ["pcp", "language"]


def test_a_preference_that_fails_a_filter_goes_to_a_person(app: TestClient) -> None:
    _load(app, *_providers("full-org", "other-org"),
          _service("svc-full", "full-org", slots=0), _service("svc-other", "other-org"))
    answer = _assign(app, referral="ServiceRequest/ref-1", preference="Organization/full-org")
    assert _out(answer, "needsReview") is True
    assert _out(answer, "provider") is None
    assert "capacity" in _out(answer, "explanation")


def test_the_provider_named_by_the_referrer(app: TestClient) -> None:
    case = _case("3", performer=[{"reference": "Organization/named-org"}])
    _load(app, *_providers("named-org", "other-org"),
          _service("svc-named", "named-org"), _service("svc-other", "other-org"), *case)
    answer = _assign(app, referral="ServiceRequest/ref-3")
    assert _out(answer, "provider") == "Organization/named-org"
    assert _out(answer, "rule") == "referral-preference"


def _previous_enrollment(org: str) -> dict[str, Any]:
    """A finished ECM enrollment with another plan's provider (a transitioning member)."""
    body = _authorization("prev-1", "ref-old")
    body.pop("referralRequest")
    body["status"] = "finished"
    body["managingOrganization"] = {"reference": f"Organization/{org}"}
    body["careManager"] = {"reference": "PractitionerRole/old-lcm"}
    body["period"] = {"start": "2026-03-01", "end": "2026-11-30"}
    body["extension"] = [
        *[e for e in body["extension"] if e["url"] == POF_EXT],
        {"url": AUTH_PERIOD, "valuePeriod": {"start": "2026-03-01", "end": "2026-08-31"}},
        {"url": f"{BASE}/StructureDefinition/discontinuation-reason",
         "valueCodeableConcept": _concept(f"{BASE}/CodeSystem/ecm-discontinuation-reason",
                                          "lost-eligibility")},
    ]
    return body


def test_a_transitioning_members_existing_provider_under_a_letter_of_agreement(
    app: TestClient,
) -> None:
    """VI.G.3.c: the existing provider, not contracted but under a letter of agreement in
    force, is assigned even though the PCP is a contracted ECM provider."""
    member = _member(generalPractitioner=[{"reference": "Organization/pcp-clinic"}])
    _load(app, member, *_providers("old-provider", "pcp-clinic"), _role("old-lcm", "old-provider"),
          _previous_enrollment("old-provider"),
          _service("svc-old", "old-provider", loa=("2026-12-01", "2027-05-31")),
          _service("svc-pcp", "pcp-clinic"))
    answer = _assign(app, referral="ServiceRequest/ref-1")
    assert _out(answer, "provider") == "Organization/old-provider"
    assert _out(answer, "rule") == "existing-provider"
    # the letter of agreement is not in force after its end: the PCP rule applies
    later = _assign(app, referral="ServiceRequest/ref-1", asOf="2027-06-01")
    assert _candidates(later)["Organization/old-provider"]["failed"] == ["network"]
    assert _out(later, "rule") == "pcp"


# -- precedence and the plan's configuration ----------------------------------------------------


def _pcp_and_bh(app: TestClient, plan: str) -> dict[str, Any]:
    member = _member(generalPractitioner=[{"reference": "Organization/pcp-clinic"}])
    _load(app, member, *_providers("pcp-clinic", "county-bh"),
          _episode("smhs-1", "smhs", "county-bh"),
          _service("svc-pcp", "pcp-clinic"), _service("svc-bh", "county-bh"),
          *_case("4", plan=plan))
    return _assign(app, referral="ServiceRequest/ref-4")


def test_pcp_and_behavioral_health_disagree_a_person_decides(app: TestClient) -> None:
    """The seeds do not rank VI.E.2.a and VI.E.2.b; Redwood configured no order."""
    answer = _pcp_and_bh(app, REDWOOD)
    assert _out(answer, "needsReview") is True
    assert _out(answer, "provider") is None
    candidates = _candidates(answer)
    assert candidates["Organization/pcp-clinic"]["rule"] == ["pcp", "language"]
    assert candidates["Organization/county-bh"]["rule"] == ["behavioral-health", "language"]


def test_the_plans_rule_order_decides(app: TestClient) -> None:
    """Golden Poppy ranks behavioral-health before pcp."""
    answer = _pcp_and_bh(app, GOLDEN)
    assert _out(answer, "needsReview") is False
    assert _out(answer, "provider") == "Organization/county-bh"
    assert _out(answer, "rule") == "behavioral-health"


def _two_alike(app: TestClient, plan: str, spanish: bool = False) -> dict[str, Any]:
    member = _member(communication=[{"language": _concept("urn:ietf:bcp:47", "es"),
                                     "preferred": True}]) if spanish else _member()
    _load(app, member, *_providers("small-org", "large-org"),
          _service("svc-small", "small-org", panel=5, languages=("en", "es")),
          _service("svc-large", "large-org", panel=50), *_case("5", plan=plan))
    return _assign(app, referral="ServiceRequest/ref-5")


def test_no_rule_several_candidates_no_tie_breaker(app: TestClient) -> None:
    answer = _two_alike(app, REDWOOD)
    assert _out(answer, "needsReview") is True
    assert "tie-breaker" in _out(answer, "explanation")
    assert all(c["eligible"] for c in _candidates(answer).values())


def test_the_plans_tie_breaker(app: TestClient) -> None:
    answer = _two_alike(app, GOLDEN)
    assert _out(answer, "provider") == "Organization/large-org"
    assert _out(answer, "rule") == "most-open-capacity"


def test_the_members_language_is_a_known_preference(app: TestClient) -> None:
    answer = _two_alike(app, REDWOOD, spanish=True)
    assert _out(answer, "provider") == "Organization/small-org"
    assert _out(answer, "rule") == "language"


# -- errors ------------------------------------------------------------------------------------


def test_bad_inputs(app: TestClient) -> None:
    _load(app, *_providers("good-org"), _service("svc-good", "good-org"))
    body = outcome(app.post(f"/fhir/{MEMBER}/$ecm-assign", json={
        "resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "go"}]}), 400)
    assert expressions(body) == ["mode"]
    body = outcome(app.post(f"/fhir/{MEMBER}/$ecm-assign", json={
        "resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "commit"}]}),
        400)
    assert expressions(body) == ["referral"]
    body = outcome(app.post(f"/fhir/{MEMBER}/$ecm-assign", json={
        "resourceType": "Parameters", "parameter": [
            {"name": "referral", "valueReference": {"reference": "ServiceRequest/ref-1"}},
            {"name": "reassign", "valueBoolean": True}]}), 400)
    assert expressions(body) == ["requestDate"]
    body = outcome(app.post(f"/fhir/{MEMBER}/$ecm-assign", json={
        "resourceType": "Parameters", "parameter": [
            {"name": "referral", "valueReference": {"reference": "ServiceRequest/nowhere"}}]}),
        404)
    assert expressions(body) == ["referral"]
    outcome(app.post("/fhir/Patient/nobody/$ecm-assign", json={"resourceType": "Parameters"}),
            404)


def test_a_referral_of_another_member_is_refused(app: TestClient) -> None:
    other = _member("other-member")
    _load(app, other, *_providers("good-org"), _service("svc-good", "good-org"))
    body = outcome(app.post("/fhir/Patient/other-member/$ecm-assign", json={
        "resourceType": "Parameters", "parameter": [
            {"name": "referral", "valueReference": {"reference": "ServiceRequest/ref-1"}}]}),
        409)
    assert expressions(body) == ["referral"]


# -- commit: one transaction, idempotent, capacity never exceeded --------------------------------

NOTICE_REASON = f"{BASE}/CodeSystem/ecm-referral-workflow"


def _world_to_commit(app: TestClient, *extra: dict[str, Any]) -> None:
    _load(app, *_providers("good-org"), _role("lcm-good", "good-org"),
          _service("svc-good", "good-org"), *extra)


def _search(app: TestClient, query: str) -> list[dict[str, Any]]:
    bundle = _ok(app.get(f"/fhir/{query}"))
    return [e["resource"] for e in bundle.get("entry") or ()]


def test_commit_writes_the_assignment_in_one_transaction(app: TestClient, acting: Acting
                                                          ) -> None:
    _world_to_commit(app)
    acting.as_(GOLDEN_STAFF)
    answer = _assign(app, referral="ServiceRequest/ref-1", mode="commit")
    assert _out(answer, "provider") == "Organization/good-org"
    assert _out(answer, "leadCareManager") == "PractitionerRole/lcm-good"
    assert _out(answer, "existing") is False
    # VI.E.4: ten business days of the authorization (the TAR, Thursday 10 December), on
    # Golden Poppy's calendar (its own holiday Monday 21 December; Christmas is not one of its
    # holidays): 11, 14, 15, 16, 17, 18, 22, 23, 24, 25 December
    assert _out(answer, "due") == "2026-12-25"
    task = _ok(app.get(f"/fhir/{_out(answer, 'task')}"))
    assert task["status"] == "requested"
    assert task["partOf"] == [{"reference": "Task/plan-task-1"}]
    assert task["owner"] == {"reference": "Organization/good-org"}
    assert task["requester"] == {"reference": GOLDEN}
    assert task["restriction"]["period"]["end"] == "2026-12-25"
    order = _ok(app.get(f"/fhir/{task['focus']['reference']}"))
    assert order["intent"] == "filler-order"
    assert order["basedOn"] == [{"reference": "ServiceRequest/ref-1"}]
    assert order["performer"] == [{"reference": "Organization/good-org"},
                                  {"reference": "HealthcareService/svc-good"}]
    episode = _ok(app.get("/fhir/EpisodeOfCare/auth-1"))
    assert episode["managingOrganization"] == {"reference": "Organization/good-org"}
    assert episode["careManager"] == {"reference": "PractitionerRole/lcm-good"}
    team = _ok(app.get(f"/fhir/{episode['team'][0]['reference']}"))
    assert team["participant"][0]["member"] == {"reference": "PractitionerRole/lcm-good"}
    notices = _search(app, "Communication?category=" + NOTICE_REASON + "|ecm-notice")
    assigned = [n for n in notices
                if n["reasonCode"][0]["coding"][0]["code"] == "ecm-assignment"]
    assert sorted(n["recipient"][0]["reference"] for n in assigned) == sorted(
        ["Organization/good-org", MEMBER, CBO])
    # overdue work is searchable: the provider's Tasks not yet answered, due by a day
    assert _count(app, "Task?owner=Organization/good-org&status=requested&due=le2026-12-25") == 1
    assert _count(app, "Task?owner=Organization/good-org&status=requested&due=lt2026-12-25") == 0


def test_the_provider_is_told_when_its_notice_is_received(app: TestClient, acting: Acting
                                                          ) -> None:
    """VI.E.4 "told": the provider's system confirms its notice (received); its Task leaves
    the work list of assignments not yet told."""
    _world_to_commit(app)
    acting.as_(GOLDEN_STAFF)
    answer = _assign(app, referral="ServiceRequest/ref-1", mode="commit")
    untold = ("Task?owner=Organization/good-org&status=requested&due=le2026-12-25"
              f"&business-status:not={REFERRAL_STATUS}|received")
    assert _count(app, untold) == 1
    notices = _search(app, "Communication?recipient=Organization/good-org")
    assert len(notices) == 1
    acting.as_(Principal("good-app", allow_all=True, organization="Organization/good-org"))
    _ok(app.put(f"/fhir/Communication/{notices[0]['id']}",
                json={**notices[0], "received": "2026-12-14T18:00:00Z"}))
    task = _ok(app.get(f"/fhir/{_out(answer, 'task')}"))
    assert task["status"] == "requested"
    assert task["businessStatus"]["coding"][0]["code"] == "received"
    assert _count(app, untold) == 0


def test_the_default_calendar_is_the_federal_one(app: TestClient, acting: Acting) -> None:
    """Redwood configured nothing: 10 business days after Thursday 10 December on the federal
    calendar: 11, 14, 15, 16, 17, 18, 21, 22, 23, 24 December."""
    _world_to_commit(app, *_case("6", plan=REDWOOD))
    answer = _assign(app, referral="ServiceRequest/ref-6")
    assert _out(answer, "due") == "2026-12-24"


def test_a_second_commit_returns_the_assignment_and_writes_nothing(
    app: TestClient, acting: Acting
) -> None:
    _world_to_commit(app)
    acting.as_(GOLDEN_STAFF)
    first = _assign(app, referral="ServiceRequest/ref-1", mode="commit")
    version = _ok(app.get("/fhir/EpisodeOfCare/auth-1"))["meta"]["versionId"]
    counts = [_count(app, f"{t}?_lastUpdated=gt2000-01-01") for t in
              ("ServiceRequest", "Task", "CareTeam", "Communication")]
    again = _assign(app, referral="ServiceRequest/ref-1", mode="commit")
    assert _out(again, "existing") is True
    assert _out(again, "provider") == _out(first, "provider")
    assert _ok(app.get("/fhir/EpisodeOfCare/auth-1"))["meta"]["versionId"] == version
    assert counts == [_count(app, f"{t}?_lastUpdated=gt2000-01-01") for t in
                      ("ServiceRequest", "Task", "CareTeam", "Communication")]
    assert _count(app, "Task?part-of=Task/plan-task-1") == 1


def test_twenty_concurrent_commits_against_a_capacity_of_five(
    app: TestClient, acting: Acting
) -> None:
    """Twenty members, one eligible service with a panel of five: exactly five assigned."""
    world: list[dict[str, Any]] = [_member(f"m{i}") for i in range(20)]
    for i in range(20):
        world += _case(f"c{i}", member=f"Patient/m{i}")
    _load(app, *_providers("small-org"), _role("lcm-small", "small-org"),
          _service("svc-small", "small-org", panel=5), *world)
    acting.as_(GOLDEN_STAFF)

    def commit(i: int) -> int:
        body = {"resourceType": "Parameters", "parameter": [
            {"name": "mode", "valueCode": "commit"},
            {"name": "referral", "valueReference": {"reference": f"ServiceRequest/ref-c{i}"}}]}
        return app.post(f"/fhir/Patient/m{i}/$ecm-assign", json=body).status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(commit, range(20)))
    assert sorted(statuses) == [200] * 5 + [422] * 15
    assert _count(app, "ServiceRequest?performer=HealthcareService/svc-small&status=active") == 5
    assert _count(app, "Task?owner=Organization/small-org") == 5
    # the preview of another member now says the service is full
    answer = _assign(app, "Patient/m0", referral="ServiceRequest/ref-c0")
    assert _candidates(answer)["Organization/small-org"]["failed"] in (["capacity"], [])


class _Commits:
    """The store's commit point (``before-commit``, inside the writers' lock): counts the
    write units' transactions that reach it (on the writers' thread, ``store-write``: not the
    subscription matcher's or the audit trail's own, which follow a commit on their own
    schedule) and, while ``hold`` is set, keeps them there until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.hold = False
        self.entered, self.release = threading.Event(), threading.Event()
        real = faults.hit

        def hit(point: str) -> None:
            if point == "before-commit" and threading.current_thread().name.startswith(
                "store-write"
            ):
                self.count += 1
                if self.hold:
                    self.entered.set()
                    assert self.release.wait(60), "the held write was never released"
            real(point)

        monkeypatch.setattr(faults, "hit", hit)


def test_a_preview_takes_no_write_unit_and_writes_nothing(
    app: TestClient, acting: Acting, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mode=preview (the default, and named) runs on a reader: no transaction reaches the
    store's commit and nothing is written; mode=commit runs in one."""
    _world_to_commit(app)
    acting.as_(GOLDEN_STAFF)
    commits = _Commits(monkeypatch)
    before = [_count(app, f"{t}?_lastUpdated=gt2000-01-01") for t in
              ("ServiceRequest", "Task", "CareTeam", "Communication", "EpisodeOfCare")]
    default = _assign(app, referral="ServiceRequest/ref-1")
    assert _out(default, "provider") == "Organization/good-org"
    named = _assign(app, referral="ServiceRequest/ref-1", mode="preview")
    assert _out(named, "needsReview") is False
    assert commits.count == 0
    assert before == [_count(app, f"{t}?_lastUpdated=gt2000-01-01") for t in
                      ("ServiceRequest", "Task", "CareTeam", "Communication", "EpisodeOfCare")]
    assert _out(_assign(app, referral="ServiceRequest/ref-1", mode="commit"), "existing") is False
    assert commits.count == 1


def test_a_preview_runs_while_a_write_is_in_flight(
    app: TestClient, acting: Acting, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write held at its commit (holding the writers' lock) does not hold up a preview."""
    _world_to_commit(app)
    acting.as_(GOLDEN_STAFF)
    commits = _Commits(monkeypatch)
    commits.hold = True
    with ThreadPoolExecutor(2) as pool:
        write = pool.submit(app.put, "/fhir/Organization/other-org", json=_org("other-org"))
        try:
            assert commits.entered.wait(60)
            answer = _assign(app, referral="ServiceRequest/ref-1")
            assert _out(answer, "provider") == "Organization/good-org"
            assert not write.done()  # the write is still held inside the lock
        finally:
            commits.hold = False
            commits.release.set()
        assert write.result().status_code == 201


def test_a_service_written_between_two_previews_changes_the_answer(
    app: TestClient, database_url: str
) -> None:
    """What previews keep of the ECM services is never served stale: a HealthcareService
    updated, created, deactivated or deleted between two previews, through this server or
    another one on the same database (another worker), changes the next answer."""
    _load(app, *_providers("a-org", "b-org"), _service("svc-a", "a-org"))
    assert _out(_assign(app, referral="ServiceRequest/ref-1"), "provider") == "Organization/a-org"
    # updated: no longer experienced in birth equity
    _ok(app.put("/fhir/HealthcareService/svc-a",
                json=_service("svc-a", "a-org", pofs=(HOMELESS,))))
    answer = _assign(app, referral="ServiceRequest/ref-1")
    assert _out(answer, "needsReview") is True
    assert _candidates(answer)["Organization/a-org"]["failed"] == ["pof-experience"]
    # created through another server on the same database
    with fhir_client(database_url) as other:
        _ok(other.put("/fhir/HealthcareService/svc-b", json=_service("svc-b", "b-org")))
    answer = _assign(app, referral="ServiceRequest/ref-1")
    assert _out(answer, "provider") == "Organization/b-org"
    # deactivated, then active again
    _ok(app.put("/fhir/HealthcareService/svc-b",
                json={**_service("svc-b", "b-org"), "active": False}))
    answer = _assign(app, referral="ServiceRequest/ref-1")
    assert set(_candidates(answer)) == {"Organization/a-org"}
    _ok(app.put("/fhir/HealthcareService/svc-b", json=_service("svc-b", "b-org")))
    assert _out(_assign(app, referral="ServiceRequest/ref-1"), "provider") == "Organization/b-org"
    # deleted
    _ok(app.delete("/fhir/HealthcareService/svc-b"), (200, 204))
    answer = _assign(app, referral="ServiceRequest/ref-1")
    assert set(_candidates(answer)) == {"Organization/a-org"}
    assert _out(answer, "needsReview") is True


def test_an_order_written_between_two_previews_changes_the_open_capacity(
    app: TestClient, database_url: str
) -> None:
    """Capacity counts kept between previews are counted again once a ServiceRequest is
    written, through this server or another one on the same database: an assignment of
    another member takes one place of the panel of 10, its revocation gives it back."""
    _load(app, *_providers("a-org"), _service("svc-a", "a-org"), _member("m2"))

    def open_places() -> int:
        answer = _assign(app, referral="ServiceRequest/ref-1")
        return int(_candidates(answer)["Organization/a-org"]["openCapacity"])

    assert open_places() == 10
    order = {**_referral("order-m2", "Patient/m2"), "intent": "filler-order",
             "requester": {"reference": GOLDEN},
             "performer": [{"reference": "Organization/a-org"},
                           {"reference": "HealthcareService/svc-a"}]}
    with fhir_client(database_url) as other:
        _ok(other.put("/fhir/ServiceRequest/order-m2", json=order))
    assert open_places() == 9
    _ok(app.put("/fhir/ServiceRequest/order-m2", json={**order, "status": "revoked"}))
    assert open_places() == 10


def test_open_slots_count_assignments_since_they_were_reported(
    app: TestClient, acting: Acting
) -> None:
    """openSlots 1 as of 1 December: one assignment since then fills it."""
    world = [_member("m1"), *_case("c1", member="Patient/m1")]
    _load(app, *_providers("slot-org"), _role("lcm-slot", "slot-org"),
          _service("svc-slot", "slot-org", slots=1), *world)
    acting.as_(GOLDEN_STAFF)
    _assign(app, referral="ServiceRequest/ref-1", mode="commit")
    answer = _assign(app, "Patient/m1", referral="ServiceRequest/ref-c1")
    assert _candidates(answer)["Organization/slot-org"]["failed"] == ["capacity"]
    assert _out(answer, "needsReview") is True


def test_commit_needs_an_authorization_and_a_decision(app: TestClient, acting: Acting) -> None:
    _load(app, *_providers("a-org", "b-org"), _service("svc-a", "a-org"),
          _service("svc-b", "b-org"), *_case("7", plan=REDWOOD))
    acting.as_(REDWOOD_STAFF)
    # a person must decide (two providers, no tie-breaker): nothing to commit
    body = outcome(app.post(f"/fhir/{MEMBER}/$ecm-assign", json={
        "resourceType": "Parameters", "parameter": [
            {"name": "mode", "valueCode": "commit"},
            {"name": "referral", "valueReference": {"reference": "ServiceRequest/ref-7"}}]}), 422)
    assert expressions(body) == ["mode"]
    # not authorized: no enrollment names the referral
    acting.as_(LOCAL)
    _ok(app.delete("/fhir/EpisodeOfCare/auth-7"))
    acting.as_(REDWOOD_STAFF)
    body = outcome(app.post(f"/fhir/{MEMBER}/$ecm-assign", json={
        "resourceType": "Parameters", "parameter": [
            {"name": "mode", "valueCode": "commit"},
            {"name": "preference", "valueReference": {"reference": "Organization/a-org"}},
            {"name": "referral", "valueReference": {"reference": "ServiceRequest/ref-7"}}]}), 409)
    assert expressions(body) == ["referral"]
    assert _count(app, "Task?part-of=Task/plan-task-7") == 0


# -- reassignment (VI.E.3) ---------------------------------------------------------------------


def test_reassignment_on_the_members_request(app: TestClient, acting: Acting) -> None:
    """The member asked on Friday 11 December to change provider: the current one is not a
    candidate, the new assignment is due within 30 calendar days (10 January 2027), the old
    order is revoked (its capacity released)."""
    _load(app, *_providers("first-org", "second-org"), _role("lcm-first", "first-org"),
          _role("lcm-second", "second-org"),
          _service("svc-first", "first-org", panel=50), _service("svc-second", "second-org"))
    acting.as_(GOLDEN_STAFF)
    first = _assign(app, referral="ServiceRequest/ref-1", mode="commit")
    assert _out(first, "provider") == "Organization/first-org"  # most open capacity
    answer = _assign(app, referral="ServiceRequest/ref-1", mode="commit", reassign=True,
                     requestDate="2026-12-11")
    assert _out(answer, "provider") == "Organization/second-org"
    assert _out(answer, "due") == "2027-01-10"
    assert "Organization/first-org" not in _candidates(answer)
    assert _count(app, "ServiceRequest?performer=HealthcareService/svc-first&status=active") == 0
    assert _count(app, "ServiceRequest?performer=HealthcareService/svc-second&status=active") == 1
    episode = _ok(app.get("/fhir/EpisodeOfCare/auth-1"))
    assert episode["managingOrganization"] == {"reference": "Organization/second-org"}
    assert episode["careManager"] == {"reference": "PractitionerRole/lcm-second"}
    # the former provider's care team is ended on the day of the change (Monday 14
    # December); the enrollment's team is the new provider's, its Lead Care Manager named
    (former_team,) = _search(app, "CareTeam?subject=Patient/ecm-member-example&status=inactive")
    assert former_team["managingOrganization"] == [{"reference": "Organization/first-org"}]
    assert former_team["period"]["end"] == "2026-12-14"
    assert "VI.E.3" in former_team["note"][-1]["text"]
    (team,) = episode["team"]
    current = _ok(app.get(f"/fhir/{team['reference']}"))
    assert current["managingOrganization"] == [{"reference": "Organization/second-org"}]
    assert current["status"] == "proposed"
    assert [p["member"] for p in current["participant"]][0] == {
        "reference": "PractitionerRole/lcm-second"
    }
    # the former provider's Task is cancelled with why; the plan's Task stays accepted
    former = _ok(app.get(f"/fhir/{_out(first, 'task')}"))
    assert former["status"] == "cancelled"
    assert "VI.E.3" in former["statusReason"]["text"]
    assert _ok(app.get("/fhir/Task/plan-task-1"))["status"] == "accepted"
    # the same request committed again changes nothing
    again = _assign(app, referral="ServiceRequest/ref-1", mode="commit", reassign=True,
                    requestDate="2026-12-11")
    assert _out(again, "existing") is True
    assert _count(app, "Task?part-of=Task/plan-task-1") == 2


# -- discontinuation (VI.F) --------------------------------------------------------------------

REASONS = f"{BASE}/CodeSystem/ecm-discontinuation-reason"
REASON_EXT = f"{BASE}/StructureDefinition/discontinuation-reason"
CRITERION = f"{BASE}/StructureDefinition/graduation-criterion"
GRADUATED = [
    {"url": CRITERION, "valueCodeableConcept": _concept(REASONS, code)}
    for code in ("graduated-goals-met", "graduated-self-manages", "graduated-connected")
]


def _enrolled(app: TestClient, acting: Acting, pofs: tuple[str, ...] = (BIRTH_EQUITY,)
              ) -> dict[str, Any]:
    """Assigned (good-org, its Lead Care Manager) and then active."""
    services = _service("svc-good", "good-org", pofs=pofs)
    _load(app, *_providers("good-org"), _role("lcm-good", "good-org"), services,
          *_case("1", pofs=pofs))
    acting.as_(GOLDEN_STAFF)
    _assign(app, referral="ServiceRequest/ref-1", mode="commit")
    episode = _ok(app.get("/fhir/EpisodeOfCare/auth-1"))
    return _ok(app.put("/fhir/EpisodeOfCare/auth-1", json={**episode, "status": "active"}))


def _finish(app: TestClient, episode: dict[str, Any], code: str, text: str | None = None,
            status: int = 200, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    reason: dict[str, Any] = _concept(REASONS, code)
    if text is not None:
        reason["text"] = text
    finished = {
        **episode,
        "status": "finished",
        "period": {**episode["period"], "end": "2026-12-14"},
        "extension": [*episode["extension"], *(extra or []),
                      {"url": REASON_EXT, "valueCodeableConcept": reason}],
    }
    return _ok(app.put(f"/fhir/EpisodeOfCare/{episode['id']}", json=finished), status)


VI_F_1 = [
    ("graduated", GRADUATED),  # a (with its three criteria)
    ("member-opted-out", None),  # b
    ("unwilling-to-engage", None),  # c
    ("lost-contact", None),  # d
    ("deceased", None),  # e
    ("lost-eligibility", None),  # f
    ("moved-out-of-area", None),  # g
    ("incarcerated", None),  # h
    ("provider-unable-to-serve", None),  # i
    ("transitioned-to-other-program", None),  # j
    ("transitioned-hospice", None),  # j.1.a
]


@pytest.mark.parametrize(("code", "extra"), VI_F_1, ids=[c for c, _ in VI_F_1])
def test_each_discontinuation_reason_ends_with_a_notice_of_action(
    app: TestClient, acting: Acting, code: str, extra: list[dict[str, Any]] | None
) -> None:
    episode = _enrolled(app, acting)
    assert _count(app, "ServiceRequest?performer=HealthcareService/svc-good&status=active") == 1
    finished = _finish(app, episode, code, extra=extra)
    assert finished["status"] == "finished"
    # capacity released (VI.F: the assignment ends)
    assert _count(app, "ServiceRequest?performer=HealthcareService/svc-good&status=active") == 0
    # the Notice of Action (VI.F.2.b): a document, and the member's notice pointing to it
    documents = _search(app, f"DocumentReference?subject={MEMBER}&type={NOTICE_REASON}"
                             "|notice-of-action")
    assert len(documents) == 1
    import base64
    text = base64.b64decode(documents[0]["content"][0]["attachment"]["data"]).decode()
    assert "appeal" in text
    notices = [n for n in _search(app, f"Communication?subject={MEMBER}&_count=50")
               if n["reasonCode"][0]["coding"][0]["code"] == "ecm-discontinuation"]
    to = {n["recipient"][0]["reference"]: n for n in notices}
    assert sorted(to) == sorted([MEMBER, "Organization/good-org"])  # VI.F.2.a and b
    assert {"contentReference": {"reference": f"DocumentReference/{documents[0]['id']}"}} in (
        to[MEMBER]["payload"])
    transfers = _search(app, f"Task?code={NOTICE_REASON}|care-transfer")
    if code.startswith("transitioned"):
        # VI.F.1.j.1: within 30 days of the end (14 December) -> 13 January 2027
        assert [t["restriction"]["period"]["end"] for t in transfers] == ["2027-01-13"]
    else:
        assert transfers == []


def test_graduation_records_the_three_criteria(app: TestClient, acting: Acting) -> None:
    episode = _enrolled(app, acting)
    body = outcome(_ok_raw(app, episode, "graduated", extra=GRADUATED[:2]), 422)
    assert expressions(body) == ["EpisodeOfCare.extension"]
    assert "graduated-connected" in body["issue"][0]["diagnostics"]
    assert _ok(app.get("/fhir/EpisodeOfCare/auth-1"))["status"] == "active"


def test_other_states_its_reason(app: TestClient, acting: Acting) -> None:
    episode = _enrolled(app, acting)
    body = outcome(_ok_raw(app, episode, "other"), 422)
    assert expressions(body) == ["EpisodeOfCare.extension"]
    _finish(app, episode, "other", text="Member entered a residential programme")


def _ok_raw(app: TestClient, episode: dict[str, Any], code: str,
            extra: list[dict[str, Any]] | None = None) -> Any:
    finished = {
        **episode, "status": "finished", "period": {**episode["period"], "end": "2026-12-14"},
        "extension": [*episode["extension"], *(extra or []),
                      {"url": REASON_EXT, "valueCodeableConcept": _concept(REASONS, code)}],
    }
    return app.put(f"/fhir/EpisodeOfCare/{episode['id']}", json=finished)


def test_birth_equity_is_not_ended_because_the_pregnancy_ended(
    app: TestClient, acting: Acting
) -> None:
    """Seed 000: a birth equity member is not disenrolled because pregnancy or postpartum
    ended; re-running eligibility ends nothing."""
    episode = _enrolled(app, acting)
    acting.as_(LOCAL)
    _ok(app.get(f"/fhir/{MEMBER}/$ecm-eligibility"))
    assert _ok(app.get("/fhir/EpisodeOfCare/auth-1"))["status"] == "active"
    acting.as_(GOLDEN_STAFF)
    body = outcome(_ok_raw(app, episode, "no-longer-meets-criteria"), 422)
    assert expressions(body) == ["EpisodeOfCare.extension"]
    assert "birth equity" in body["issue"][0]["diagnostics"]
    assert _count(app, "ServiceRequest?performer=HealthcareService/svc-good&status=active") == 1
    # graduation ends it
    _finish(app, episode, "graduated", extra=GRADUATED)


def test_another_population_may_end_when_criteria_are_no_longer_met(
    app: TestClient, acting: Acting
) -> None:
    episode = _enrolled(app, acting, pofs=(HOMELESS,))
    _finish(app, episode, "no-longer-meets-criteria")
